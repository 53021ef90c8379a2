"""Worker statistics over the supervisor's datagram socket pair (stats_channel.py)."""
from __future__ import annotations

import errno
import json
import os
import socket

from quichsd.daemon.stats import HandshakeStats
from quichsd.daemon.stats_channel import MAX_DATAGRAM, StatsCollector, StatsPublisher


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)


def drain(rx: socket.socket, collector: StatsCollector) -> None:
    rx.setblocking(False)
    while True:
        try:
            collector.feed(rx.recv(MAX_DATAGRAM))
        except BlockingIOError:
            return


def test_records_cross_the_socket_and_add_up():
    rx, tx = pair()
    publisher, collector = StatsPublisher(tx), StatsCollector(HandshakeStats())
    a, b, c = publisher.record_start(), publisher.record_start(), publisher.record_start()
    publisher.record_done(a, peer="192.0.2.1:443", role="server", alpn="smb", suite="TLS_AES_128_GCM_SHA256",
                          status=0)
    publisher.record_done(b, peer="192.0.2.2:443", role="client", status=errno.EACCES)
    drain(rx, collector)
    counters = collector.stats.counters()
    assert counters == {"accepted": 3, "succeeded": 1, "failed": 1, "in_flight": 1, "failed.EACCES": 1}
    first = collector.stats.recent()[0]
    assert (first["peer"], first["role"], first["alpn"], first["suite"], first["status_name"]) == \
        ("192.0.2.1:443", "server", "smb", "TLS_AES_128_GCM_SHA256", "OK")
    assert first["duration_ms"] >= 0
    publisher.record_done(c, status=0)
    drain(rx, collector)
    assert collector.stats.counters()["in_flight"] == 0


def test_requests_of_a_dead_worker_stop_being_in_flight():
    rx, tx = pair()
    collector = StatsCollector(HandshakeStats())
    for pid in (os.getpid(), 999_999_999):
        tx.send(json.dumps({"t": "s", "p": pid, "i": 1}).encode())
    drain(rx, collector)
    assert collector.in_flight == 2
    assert collector.forget_dead() == 1  # pid 999999999 has no /proc entry
    assert collector.stats.counters() == {"accepted": 2, "succeeded": 0, "failed": 1, "in_flight": 1,
                                          "failed.EIO": 1}


def test_malformed_datagrams_are_ignored():
    collector = StatsCollector(HandshakeStats())
    for junk in (b"", b"not json", b"[]", b'{"t": "d"}', b'{"t": "s", "p": "x", "i": 1}'):
        collector.feed(junk)
    assert collector.stats.counters()["accepted"] == 0


def test_a_publisher_never_blocks_and_survives_a_missing_reader():
    rx, tx = pair()
    publisher = StatsPublisher(tx)
    for _ in range(5000):  # far more than the socket buffer holds: the excess is dropped
        publisher.record_done(publisher.record_start(), status=0)
    assert publisher.dropped > 0
    rx.close()
    publisher.record_start()  # ECONNREFUSED now: counted, not raised
    assert publisher.dropped > 0
