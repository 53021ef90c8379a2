"""What a half-open server connection of the simulation holds (issue 10: a half-open flood).

Server connections are made as the endpoint makes them, from real client Initials (our
client connection and TLS engine: a ClientHello in a protected, padded Initial), sans-I/O:
no socket, thread or timer. The Python heap growth per connection (tracemalloc) is held
under a bound: a connection that got its first Initial and nothing more (what waits in a
listener's backlog), and one that has also queued and sent the server's first flight
(ServerHello, then the Handshake flight with the certificate, waiting for the client's
Finished). Before the connection's state was made lazy and shared, these were 16.1 and
20 KiB; the bounds leave room for small additions, not for a per-connection copy of
a deque, a parameter table or a level's stream set again.
"""
from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from quichsd.devcerts import leaf
from quichsd.quic.packet_protection import initial_keys
from quichsd.quic.versions import SUPPORTED_VERSIONS
from quichsd.sock.sim.connection import SimConnection
from quichsd.sock.sim.levels import INITIAL
from quichsd.sock.sim.listener_peek import client_initial_header, open_client_initial
from quichsd.sock.sim.state import ConnState
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import Credentials, TlsConfig
from quichsd.tls.events import InstallSecret, PeerTransportParameters, SendHandshake
from quichsd.tls.server import ServerEngine

COUNT = 200
NOW = 1_000_000.0
BOUND_INITIAL_ONLY = 12 * 1024
BOUND_FLIGHT_SENT = 16 * 1024


def client_initials(count: int) -> list[bytes]:
    """First datagrams of `count` real clients (each a fresh connection and ClientHello)."""
    out = []
    for _ in range(count):
        client = SimConnection(is_client=True, now=NOW)
        tp = client.local_transport_params_blob()
        (hello,) = ClientEngine(TlsConfig(alpn_protocols=[b"h3"], verify_peer=False,
                                          transport_parameters=tp)).start()
        client.send_crypto(INITIAL, hello.data)
        (datagram, _), = client.datagrams_to_send(NOW)
        out.append(datagram)
    return out


def accept_initial(data: bytes, port: int) -> SimConnection:
    """What the endpoint does with a client Initial for no known connection."""
    header = client_initial_header(data)
    assert header is not None
    keys = initial_keys(header.dcid, SUPPORTED_VERSIONS[header.version])
    opened = open_client_initial(data, header, keys[0])
    conn = SimConnection(is_client=False, version=header.version, peer_cid=header.scid,
                         original_dcid=header.dcid, token=header.token, now=NOW,
                         peer_addr=("127.0.0.1", port), initial_keys=keys)
    conn.receive_datagram(data, ("127.0.0.1", port), NOW, 0.0, opened)
    return conn


def send_first_flight(conn: SimConnection, credentials: Credentials) -> None:
    """The server side of the handshake up to its first flight, through the calls the
    socket makes (keys, peer parameters, CRYPTO data), then onto the wire."""
    engine = ServerEngine(TlsConfig(alpn_protocols=[b"h3"], credentials=credentials,
                                    transport_parameters=conn.local_transport_params_blob()))
    item = conn.recv_crypto(1 << 16)
    assert item is not None
    events = engine.receive(item[0], item[1], NOW)
    if engine.flight_pending:
        events += engine.continue_flight(NOW)
    for event in events:
        if type(event) is InstallSecret:
            conn.install_secret(int(event.level), bool(event.direction), event.cipher_type, event.secret)
        elif type(event) is PeerTransportParameters:
            conn.set_peer_transport_params_blob(event.data)
    for event in events:
        if type(event) is SendHandshake:
            conn.send_crypto(int(event.level), event.data)
    assert conn.datagrams_to_send(NOW)  # the flight leaves (within the amplification limit)
    conn.idle_work()


def growth_per_connection(make: Callable[[int], Any]) -> float:
    make(0)  # first-use caches (key schedules, codec tables) are not per connection
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        held = [make(i) for i in range(COUNT)]
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(held) == COUNT and all(c.state == ConnState.ESTABLISHING for c in held)
    return sum(s.size_diff for s in after.compare_to(before, "filename")) / COUNT


@pytest.fixture(scope="module")
def initials() -> list[bytes]:
    return client_initials(COUNT + 1)


def test_a_connection_with_only_its_first_initial_stays_small(initials) -> None:
    per_conn = growth_per_connection(lambda i: accept_initial(initials[i], 1000 + i))
    assert per_conn < BOUND_INITIAL_ONLY, f"{per_conn / 1024:.1f} KiB per half-open connection"


def test_a_connection_that_sent_its_first_flight_stays_small(initials) -> None:
    cert, key = leaf("p256")
    credentials = Credentials([cert], key)

    def make(i: int) -> SimConnection:
        conn = accept_initial(initials[i], 1000 + i)
        send_first_flight(conn, credentials)  # the engine is dropped: only the connection counts
        return conn

    per_conn = growth_per_connection(make)
    assert per_conn < BOUND_FLIGHT_SENT, f"{per_conn / 1024:.1f} KiB per half-open connection"


def test_a_connection_nobody_has_read_from_keeps_no_derived_key_in_idle_time(initials) -> None:
    """Idle-time key derivation is for handshakes that run: a connection in the backlog
    keeps its keys as secrets (a derived key's cipher contexts are ~3.5 KiB), derives one
    when a packet needs it (its ACK), drops it again in idle time; once the application
    reads its ClientHello, idle time derives them all. (Derivation is deterministic, so
    when it happens changes no byte: tests/sim/test_lazy_keys.py.)"""
    conn = accept_initial(initials[0], 999)
    keys = (conn.keys.send[INITIAL], conn.keys.recv[INITIAL])
    assert keys[1].derived  # it opened the client's Initial
    conn.idle_work()
    assert not any(k.derived for k in keys)
    due = conn.get_timer()
    assert due is not None
    conn.handle_timer(due)
    assert conn.datagrams_to_send(due) and keys[0].derived  # the held ACK: derived for it
    conn.idle_work()
    assert not any(k.derived for k in keys)
    assert conn.recv_crypto(1 << 16) is not None  # the application takes it: its handshake runs
    conn.idle_work()
    assert all(k.derived for k in keys)
