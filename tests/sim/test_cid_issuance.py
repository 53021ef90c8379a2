"""The NEW_CONNECTION_IDs of the completion step (spec §2.4 "Completion") leave in idle
time, not with the client's Finished: SimConnection.idle_work, run by the endpoint before
it blocks (Endpoint.wait_for) or by the reactor (Endpoint.background_step), and a timer
CID_ISSUE_DELAY after completion at the latest. RFC 9000 §5.1.1 sets no deadline, so a
connection that closes first issues none. The peer still gets the full set, up to its
active_connection_id_limit (§18.2), each with its stateless reset token (§10.3)."""
from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake
from quichsd.sock.sim import frames as fr
from quichsd.sock.sim.connection import CID_ISSUE_DELAY, SimConnection
from quichsd.sock.sim.endpoint import Endpoint
from quichsd.sock.sim.levels import APP
from quichsd.sock.sim.receiver import STATELESS_RESET_ERRCODE
from quichsd.sock.sim.state import ConnState
from tests.sim.driver import START, SimAgent, SimServer, Wire, handshake, packet_kinds, sim_client
from tests.sockets import Pki

DEFAULT_LIMIT = 7  # our active_connection_id_limit (tparams.LOCAL_DEFAULTS)


def _issued_to_peer(issuer: SimConnection, peer: SimConnection) -> bool:
    """The peer holds every CID `issuer` has, each with its stateless reset token."""
    return all(peer.cids.peer.get(seq) == (cid, issuer.cids.reset_token(cid))
               for seq, cid in issuer.cids.local.items() if seq)


def _full_set(issuer: SimConnection, peer: SimConnection, limit: int = DEFAULT_LIMIT) -> bool:
    return len(issuer.cids.local) == limit and _issued_to_peer(issuer, peer)


def _client_completed(now: float = START) -> tuple[SimAgent, SimServer, Wire]:
    """A client that installed both 1-RTT keys (completion) and sent its Finished (lost:
    the server never reads it); only timers do idle work."""
    client, server = sim_client(now), SimServer()
    wire = Wire(client, server, now=now, idle_work=False)
    client.start(wire.now)
    wire.run(lambda: client.completed)
    assert client.send(wire.now)  # the Finished, alone
    assert not client.send(wire.now) and client.conn.cids.due is not None
    return client, server, wire


# ---- in memory (tests/sim/driver.py) ----------------------------------------------------------


@pytest.mark.parametrize("idle_work", [True, False], ids=["agent-waits", "timer-only"])
def test_both_peers_get_the_full_set(idle_work):
    client, server = sim_client(), SimServer()
    wire = Wire(client, server, idle_work=idle_work)
    client.start(wire.now)
    wire.run(lambda: client.completed)
    completed_at = wire.now
    assert client.conn.cids.due == pytest.approx(completed_at + CID_ISSUE_DELAY, abs=wire.latency)
    wire.run(lambda: server.conn is not None and _full_set(server.conn, client.conn)
             and _full_set(client.conn, server.conn))
    if idle_work:  # each side's CIDs leave right after its last handshake datagram
        assert wire.now - completed_at <= 2 * wire.latency
    assert client.conn.cids.due is None and server.conn.cids.due is None


def test_the_peers_active_connection_id_limit_bounds_the_set():
    client = sim_client(local_params={"active_connection_id_limit": 2})
    server = SimServer(local_params={"active_connection_id_limit": 4})
    wire = handshake(client, server)
    wire.run(lambda: _full_set(client.conn, server.conn, 4) and _full_set(server.conn, client.conn, 2))
    wire.run(lambda: client.conn.handshake_confirmed)
    assert client.conn.state == server.conn.state == ConnState.ESTABLISHED  # no CONNECTION_ID_LIMIT_ERROR


def test_a_late_cids_reset_token_resets_the_peer():
    """RFC 9000 §10.3: a stateless reset that ends in the token of a CID issued in idle
    time is recognised (and only as the last 16 bytes of an unprocessable datagram)."""
    client, server = sim_client(), SimServer()
    wire = handshake(client, server)
    wire.run(lambda: _full_set(server.conn, client.conn))
    token = server.conn.cids.reset_token(server.conn.cids.local[DEFAULT_LIMIT - 1])
    client.recv(bytes([0x40]) + os.urandom(30) + token, wire.now)
    assert client.conn.state == ConnState.CLOSED
    assert client.conn.close_info == (STATELESS_RESET_ERRCODE, 0, b"")


def test_no_timer_is_left_once_issued():
    client, server, wire = _client_completed()
    conn = client.conn
    assert conn.get_timer() <= conn.cids.due
    conn.handle_timer(conn.cids.due)
    assert conn.cids.due is None and len(conn.cids.local) == DEFAULT_LIMIT
    assert not conn.idle_work()  # issued once only
    assert [f for f in conn.lifecycle.pending if isinstance(f, fr.NewConnectionId)]


def test_a_connection_closed_first_never_issues():
    client, server, wire = _client_completed()
    conn = client.conn
    conn.close(0, b"done early")
    assert not conn.idle_work() and conn.get_timer() is None
    assert conn.cids.due is None and list(conn.cids.local) == [0]
    conn.handle_timer(wire.now + 1.0)
    assert not any(isinstance(f, fr.NewConnectionId) for f in conn.lifecycle.pending)


def test_the_first_key_update_waits_for_no_ack():
    """RFC 9001 §6.1: right after confirmation the first update needs no acknowledged
    1-RTT packet (none need have been sent: the completion step no longer sends one); a
    subsequent one does (EINVAL while pending, spec QUIC_SOCKOPT_KEY_UPDATE)."""
    client, server = sim_client(), SimServer()
    wire = Wire(client, server, idle_work=False)
    client.start(wire.now)
    wire.run(lambda: client.conn.handshake_confirmed)
    conn = client.conn
    assert conn.spaces.by_id[APP].largest_acked is None  # nothing of ours acknowledged at 1-RTT
    conn.key_update()
    with pytest.raises(OSError) as info:
        conn.key_update()
    assert info.value.errno == 22
    wire.run(lambda: server.conn.key_phase == 1 and conn.spaces.by_id[APP].largest_acked is not None
             and conn.spaces.by_id[APP].largest_acked >= conn.phase.first_pn)
    conn.key_update()
    assert conn.key_phase == 0


# ---- the endpoint: idle work before a wait, and from the reactor -------------------------------


@pytest.fixture
def completed_on_endpoint() -> Iterator[tuple[SimConnection, Endpoint, socket.socket]]:
    """A completed client connection (its Finished already sent) on a real endpoint, its
    peer a UDP socket of ours. Its clock runs an hour ahead: none of its timers (the
    issuance's either) becomes due during the test, only idle work can issue."""
    client, _, wire = _client_completed(time.time() + 3600)
    conn = client.conn
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2)
    conn.peer_addr = sink.getsockname()
    endpoint = Endpoint(socket.AF_INET)
    with endpoint.lock:  # held: no reactor step (idle work) issues before the check
        endpoint.add_connection(conn)  # nothing queued to send
        assert conn.cids.due is not None
    try:
        yield conn, endpoint, sink
    finally:
        endpoint.remove_connection(conn)
        endpoint.shutdown()
        sink.close()


def _issued_and_registered(conn: SimConnection, endpoint: Endpoint, sink: socket.socket) -> None:
    assert conn.cids.due is None and len(conn.cids.local) == DEFAULT_LIMIT
    assert all(endpoint.connections.get(cid) is conn for cid in conn.local_cids())  # demultiplexed
    data, _ = sink.recvfrom(2048)
    assert not data[0] & 0x80  # a 1-RTT packet: the NEW_CONNECTION_IDs


def test_endpoint_issues_before_it_blocks(completed_on_endpoint):
    conn, endpoint, sink = completed_on_endpoint
    with endpoint.lock:
        assert not endpoint.wait_for(lambda: False, time.monotonic() + 0.005)
        _issued_and_registered(conn, endpoint, sink)


def test_reactor_step_issues(completed_on_endpoint):
    conn, endpoint, sink = completed_on_endpoint
    endpoint.background_step(time.time(), readable=False)  # no timer due: idle work only
    with endpoint.lock:
        _issued_and_registered(conn, endpoint, sink)


# ---- over loopback sockets: nobody calls the socket after the handshake ------------------------


def _sim_conn(sock: QuicSocket) -> tuple[SimConnection, Endpoint]:
    return sock.backend.conn, sock.backend.endpoint


def _wait_until(check: Callable[[], bool], timeout: float) -> None:
    """Poll check() (without any socket call) until it holds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not within the timeout")
        time.sleep(0.0005)


class _Recorder:
    """A UDP relay between a client and a server on loopback that keeps every datagram the
    client sends, in order (real sockets: what the client's endpoint put on the wire)."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the client's peer
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the server's peer
        self.back.connect(server)
        self.address = self.front.getsockname()[:2]
        self.sent: list[bytes] = []
        self._client: tuple[str, int] | None = None
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        while True:
            ready, _, _ = select.select([self.front, self.back, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            # ECONNREFUSED: the server's socket is gone (the test ends); lost as on UDP.
            with contextlib.suppress(ConnectionRefusedError):
                if self.front in ready:
                    data, self._client = self.front.recvfrom(65536)
                    self.sent.append(data)
                    self.back.send(data)
                if self.back in ready:
                    data = self.back.recv(65536)
                    if self._client is not None:
                        self.front.sendto(data, self._client)

    def close(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join(5)
        for sock in (self.front, self.back, self._stop_r, self._stop_w):
            sock.close()


def test_both_roles_issue_with_no_socket_call_after_the_handshake(pki: Pki):
    """No socket call on either side after quic_handshake returns: the reactor's step (or
    the issuance timer) sends the NEW_CONNECTION_IDs, within milliseconds; the client's
    Finished left without a 1-RTT packet, they follow in a datagram of their own."""
    listener = QuicSocket(socket.AF_INET, backend="sim")
    listener.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, b"h3")
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted: list[QuicSocket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        quic_handshake(conn, HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                             key_file=pki.key_file, timeout=5))
        accepted.append(conn)  # and no further call on it, nor on the listener

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = QuicSocket(socket.AF_INET, backend="sim")
    recorder = _Recorder(listener.getsockname()[:2])
    sent = recorder.sent
    try:
        client.connect(recorder.address)
        quic_handshake(client, HandshakeConfig(alpns=["h3"], hostname="localhost", cafile=pki.ca_file,
                                               timeout=5))
        thread.join(5)
        (server,) = accepted
        cconn, c_endpoint = _sim_conn(client)
        sconn, s_endpoint = _sim_conn(server)

        def both_sets() -> bool:
            with c_endpoint.lock, s_endpoint.lock:
                return _full_set(cconn, sconn) and _full_set(sconn, cconn)

        # sent by the reactor's step (WATCH_GRACE) or the CID_ISSUE_DELAY timer: no issuance
        # is left pending on either side, and the client's follow the Finished alone (below)
        _wait_until(both_sets, 2.0)
        with c_endpoint.lock, s_endpoint.lock:
            assert cconn.cids.due is None and sconn.cids.due is None
        kinds = [[is_long for is_long, _ in packet_kinds(data)] for data in sent]
        finished = max(i for i, k in enumerate(kinds) if any(k))  # the last with long headers
        assert all(kinds[finished]) and not any(kinds[finished + 1])  # then 1-RTT alone
        with c_endpoint.lock, s_endpoint.lock:
            assert cconn.state == sconn.state == ConnState.ESTABLISHED
            assert all(c_endpoint.connections.get(cid) is cconn for cid in cconn.local_cids())
            assert all(s_endpoint.connections.get(cid) is sconn for cid in sconn.local_cids())
        server.close()
    finally:
        client.close()
        listener.close()
        recorder.close()
