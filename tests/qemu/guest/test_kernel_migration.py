"""Connection migration between the real kernel module and the simulation (issue 13), what
tests/sim/test_socket_migration.py asserts on the simulation alone: QUIC_SOCKOPT_CONNECTION_MIGRATION
in ESTABLISHED moves a client to a new local address (the kernel client against our server, our
client against a kernel server), and a server's preferred address set before its handshake
takes the client there (the kernel server's to our client, ours to a kernel client). Each side
checks the CONNECTION_MIGRATION event's byte (1: our own address changed), getsockname and
getpeername, and that the echo goes on."""
from __future__ import annotations

import errno
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake
from quichsd.abi import pack_event_option
from quichsd.kernel_numbers import QuicEvent
from quichsd.sock.sockaddr import pack_sockaddr
from tests.sim.relay import ImpairingRelay
from tests.sim.transfer import free_udp, payload, recv_all
from tests.sock.pairs import stream_to_fin

L = abi.lib
TCG_SLACK = 60.0  # Python runs 10-20x slower under TCG than on the host
MIGRATION = int(QuicEvent.CONNECTION_MIGRATION)
EVENT_ON = pack_event_option(QuicEvent.CONNECTION_MIGRATION, True)
BACKENDS = [("kernel", "sim"), ("sim", "kernel")]
IDS = ["kernel-client-sim-server", "sim-client-kernel-server"]
BLACKHOLE = 9.0  # seconds: more than the 6 s a client probes before it gives a path up

pytestmark = pytest.mark.usefixtures("quic_module")


Prepare = Callable[[QuicSocket], None]


@contextmanager
def pair_through_relay(pki, client_backend: str, server_backend: str
                       ) -> Iterator[tuple[QuicSocket, QuicSocket, ImpairingRelay]]:
    """pair() with the client talking to the server through tests/sim/relay.py."""
    relays: list[ImpairingRelay] = []

    def route(server: tuple[str, int]) -> tuple[str, int]:
        relays.append(ImpairingRelay(server).start())
        return relays[0].address

    try:
        with pair(pki, client_backend, server_backend, route=route) as (client, server):
            yield client, server, relays[0]
    finally:
        for relay in relays:
            relay.stop()


@contextmanager
def pair(pki, client_backend: str, server_backend: str, before_handshake: Prepare | None = None,
         route: Callable[[tuple[str, int]], tuple[str, int]] | None = None
         ) -> Iterator[tuple[QuicSocket, QuicSocket]]:
    """(client, accepted server connection) after both handshakes, events on; the server
    connection gets `before_handshake(conn)` before its handshake starts; `route(server)`:
    where the client connects instead (a relay)."""
    listener = QuicSocket(socket.AF_INET, backend=server_backend)
    listener.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(TCG_SLACK)
    accepted: list[QuicSocket] = []
    failed: list[BaseException] = []
    server_config = HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                    key_file=pki.key_file, timeout=TCG_SLACK)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(TCG_SLACK)
            conn.setsockopt(L.QUIC_SOCKOPT_EVENT, EVENT_ON)
            if before_handshake is not None:
                before_handshake(conn)
            quic_handshake(conn, server_config)
            accepted.append(conn)
        except BaseException as exc:  # reported below
            failed.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = QuicSocket(socket.AF_INET, backend=client_backend)
    assert client.backend_name == client_backend
    client.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    client.settimeout(TCG_SLACK)
    try:
        address = tuple(listener.getsockname()[:2])
        client.connect(route(address) if route else address)
        client.setsockopt(L.QUIC_SOCKOPT_EVENT, EVENT_ON)
        quic_handshake(client, HandshakeConfig(alpns=["h3"], cafile=pki.ca_file, hostname="localhost",
                                               timeout=TCG_SLACK))
        thread.join(TCG_SLACK)
        assert not failed, failed
        assert accepted
        yield client, accepted[0]
    finally:
        client.close()
        for conn in accepted:
            conn.close()
        listener.close()


def echo_with_events(client: QuicSocket, server: QuicSocket, payload: bytes,
                     server_event: bool = True) -> tuple[bytes, list, list]:
    """The client sends `payload`; the server echoes it once it has its data (and an event,
    if `server_event`); the client reads the echo and its own event. (echo, client events,
    server events)."""
    server_events: list[bytes] = []
    client_events: list[bytes] = []

    def echo() -> None:
        data = stream_to_fin(server, server_events, want_event=server_event)
        server.send(data, -1, fin=True)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    client.send(payload, -1, new=True, fin=True)
    echoed = stream_to_fin(client, client_events, want_event=True)
    thread.join(TCG_SLACK)
    return echoed, client_events, server_events


def sim_dcid(client: QuicSocket, server: QuicSocket) -> bytes:
    """The destination CID the simulated end sends with."""
    sim = client if client.backend_name == "sim" else server
    conn = sim.backend.conn  # type: ignore[attr-defined]
    return bytes(conn.peer_cid)


@pytest.mark.parametrize(("client_backend", "server_backend"), BACKENDS, ids=IDS)
def test_client_migrates_actively(pki, client_backend: str, server_backend: str) -> None:
    """Also RFC 9000 §9.5 as the simulated end sees it: a sim client moves to the kernel
    server's next CID; a sim server moves to the kernel client's next one, because the kernel
    client came with a new CID of ours."""
    new_local = free_udp("127.0.0.2")
    with pair(pki, client_backend, server_backend) as (client, server):
        client.send(b"warm up", -1, new=True, fin=True)  # the server's CIDs reach the client
        stream_to_fin(server, [], want_event=False)
        dcid = sim_dcid(client, server)
        client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(new_local))
        echoed, client_events, server_events = echo_with_events(client, server, b"after the move")
        assert tuple(client.getsockname()[:2]) == new_local
        assert tuple(server.getpeername()[:2]) == new_local
        assert sim_dcid(client, server) != dcid
    assert echoed == b"after the move"
    assert client_events == [bytes((MIGRATION, 1))]
    assert server_events == [bytes((MIGRATION, 0))]


@pytest.mark.parametrize(("client_backend", "server_backend"), BACKENDS, ids=IDS)
def test_client_moves_to_the_preferred_address(pki, client_backend: str, server_backend: str) -> None:
    preferred = free_udp("127.0.0.2")

    def prefer(conn: QuicSocket) -> None:
        conn.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(preferred))

    with pair(pki, client_backend, server_backend, prefer) as (client, server):
        echoed, client_events, server_events = echo_with_events(client, server, b"preferred")
        assert tuple(client.getpeername()[:2]) == preferred
        assert tuple(server.getsockname()[:2]) == preferred
    assert echoed == b"preferred"
    assert client_events == [bytes((MIGRATION, 0))]  # the client kept its socket
    assert server_events == [bytes((MIGRATION, 1))]  # the server's address changed


@pytest.mark.parametrize("backend", ["kernel", "sim"])
def test_unanswered_migration_is_given_up(pki, backend: str) -> None:
    """Every answer to the client is dropped while it moves (a relay's blackhole): the
    PATH_CHALLENGE goes unanswered, the client gives the path up after its resends (the
    kernel's PATH timer, max(2 PTO, 1.5 s) each, three resends: 6 s at least) and stays where
    it was, without an event; a second move, once the blackhole is over, succeeds."""
    server_peer = "sim"
    first, second = free_udp("127.0.0.2"), free_udp("127.0.0.3")
    with pair_through_relay(pki, backend, server_peer) as (client, server, relay):
        client.send(b"warm up", -1, new=True, fin=True)
        stream_to_fin(server, [], want_event=False)
        old_local = tuple(client.getsockname()[:2])
        relay.blackhole(BLACKHOLE, "to_client")
        started = time.monotonic()
        client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(first))
        given_up = None
        while given_up is None and time.monotonic() - started < BLACKHOLE + 10:
            try:
                client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(second))
            except OSError as exc:
                assert exc.errno == errno.EAGAIN, exc
                assert tuple(client.getsockname()[:2]) == old_local  # still on the old path
                time.sleep(0.25)  # polling the socket's state: nothing else shows it
                continue
            given_up = time.monotonic() - started
        assert given_up is not None and given_up >= 4 * 1.5 - 0.5, given_up
        # The relay hides the client's address from the server: no event there.
        echoed, client_events, _ = echo_with_events(client, server, b"second move", server_event=False)
        assert tuple(client.getsockname()[:2]) == second
    assert echoed == b"second move"
    assert client_events == [bytes((MIGRATION, 1))]  # the second move only


@pytest.mark.parametrize("backend", ["kernel", "sim"])
def test_preferred_address_is_for_servers(pki, backend: str) -> None:
    """ESTABLISHING: a client may not set it (EINVAL); a listener gets EPIPE."""
    listener = QuicSocket(socket.AF_INET, backend=backend)
    client = QuicSocket(socket.AF_INET, backend=backend)
    try:
        listener.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with pytest.raises(OSError) as on_listener:
            listener.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(free_udp("127.0.0.2")))
        assert on_listener.value.errno == errno.EPIPE
        client.connect(listener.getsockname()[:2])
        with pytest.raises(OSError) as on_client:
            client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(free_udp("127.0.0.2")))
        assert on_client.value.errno == errno.EINVAL
    finally:
        client.close()
        listener.close()


@pytest.mark.parametrize("backend", ["kernel", "sim"])
def test_migration_errors(pki, backend: str) -> None:
    """socket.c quic_sock_connection_migrate's errno, on both backends alike."""
    peer = "sim" if backend == "kernel" else "kernel"
    with pair_through_relay(pki, backend, peer) as (client, _server, relay):
        here = tuple(client.getsockname()[:2])
        for addr, code in [(("127.0.0.2", 0), errno.EINVAL), (here, errno.EINVAL),
                           (("::1", 4433, 0, 0), errno.EINVAL)]:
            with pytest.raises(OSError) as exc:
                client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(addr))
            assert exc.value.errno == code, (addr, exc.value)
        relay.blackhole(1.0, "to_client")  # no PATH_RESPONSE can end the move before the next call
        client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(free_udp("127.0.0.2")))
        with pytest.raises(OSError) as busy:
            client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(free_udp("127.0.0.3")))
        assert busy.value.errno == errno.EAGAIN
        client.shutdown(socket.SHUT_RDWR)
        with pytest.raises(OSError) as closed:
            client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(free_udp("127.0.0.3")))
        assert closed.value.errno == errno.EPIPE


@pytest.mark.parametrize(("client_backend", "server_backend"), BACKENDS, ids=IDS)
def test_a_transfer_across_the_move_arrives_intact(pki, client_backend: str, server_backend: str) -> None:
    """As tests/sim/test_socket_migration.py on the simulation alone: the move starts as the
    upload does, the data arrives intact and both ends end up on the new address."""
    new_local = free_udp("127.0.0.2")
    data = payload(256 << 10)
    with pair(pki, client_backend, server_backend) as (client, server):
        client.setsockopt(L.QUIC_SOCKOPT_EVENT, pack_event_option(QuicEvent.CONNECTION_MIGRATION, False))
        server.setsockopt(L.QUIC_SOCKOPT_EVENT, pack_event_option(QuicEvent.CONNECTION_MIGRATION, False))
        client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(new_local))
        digest = upload(client, server, data)
        assert tuple(client.getsockname()[:2]) == new_local
        assert tuple(server.getpeername()[:2]) == new_local
    assert digest == hashlib.sha256(data).hexdigest()


def upload(client: QuicSocket, server: QuicSocket, data: bytes) -> str:
    """`data` on a new client stream (blocking sends: both backends wait for credit); the
    server answers the SHA-256 it read, which is returned."""
    def receive() -> None:
        stream_id, digest, _length = recv_all(server)
        server.send(digest.encode(), stream_id, fin=True)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    view, sent = memoryview(data), 0
    while sent < len(data):
        sent += client.send(bytes(view[sent:]), -1, new=sent == 0, fin=True)
    answer, fin = b"", False
    while not fin:
        chunk, _, fin = client.recv()
        answer += chunk
    thread.join(TCG_SLACK)
    return answer.decode()
