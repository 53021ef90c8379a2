"""QUIC_SOCKOPT_CONNECTION_MIGRATION on simulated sockets over real UDP (issue 13): a client
moves to a new local address mid-connection and the echo goes on; a server's preferred
address (RFC 9000 §9.6) takes the client there after the handshake; the errors of socket.c
quic_sock_connection_migrate."""
from __future__ import annotations

import contextlib
import errno
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from quichsd import HandshakeConfig, HandshakeError
from quichsd.abi import lib as L
from quichsd.abi import pack_event_option
from quichsd.handshake import quic_handshake
from quichsd.kernel_numbers import QuicEvent
from quichsd.quic.transport_params import TransportParameters
from quichsd.sock import QuicSocket
from quichsd.sock.sockaddr import pack_sockaddr
from tests.sim.relay import ImpairingRelay
from tests.sim.transfer import connected_pair, echo_once, free_udp, payload, transfer
from tests.sock.pairs import stream_to_fin
from tests.sockets import Pki

MIGRATION = int(QuicEvent.CONNECTION_MIGRATION)
EVENT_ON = pack_event_option(QuicEvent.CONNECTION_MIGRATION, True)


def _configs(pki: Pki) -> tuple[HandshakeConfig, HandshakeConfig]:
    server = HandshakeConfig(server=True, alpns=["bulk"], cert_file=pki.cert_file, key_file=pki.key_file,
                             timeout=10)
    client = HandshakeConfig(alpns=["bulk"], hostname="localhost", cafile=pki.ca_file, timeout=10)
    return server, client


def test_client_moves_to_a_new_local_address_and_the_echo_goes_on(pki: Pki) -> None:
    events: dict[str, list[bytes]] = {"server": [], "client": []}
    new_local = free_udp("127.0.0.2")
    with connected_pair(*_configs(pki)) as (client, server):
        for sock in (client, server):
            sock.setsockopt(L.QUIC_SOCKOPT_EVENT, EVENT_ON)
        old_local = client.getsockname()
        client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(new_local))
        thread = threading.Thread(target=echo_once, args=(server, events["server"], True), daemon=True)
        thread.start()
        client.send(b"after the move", 0, fin=True)
        echoed = stream_to_fin(client, events["client"], want_event=True)
        thread.join(10)
        assert tuple(client.getsockname()) == new_local != tuple(old_local)
        assert tuple(server.getpeername()) == new_local
    assert echoed == b"after the move"
    assert events == {"client": [bytes((MIGRATION, 1))], "server": [bytes((MIGRATION, 0))]}


def test_migration_errors(pki: Pki) -> None:
    relays: list[ImpairingRelay] = []

    def route(server: tuple[str, int]) -> tuple[str, int]:
        relays.append(ImpairingRelay(server).start())
        return relays[0].address

    try:
        with connected_pair(*_configs(pki), route) as (client, _server):
            _errors_on(client, relays[0])
    finally:
        for relay in relays:
            relay.stop()
    listener = QuicSocket(socket.AF_INET, backend="sim")
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with pytest.raises(OSError) as listening:
            listener.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(free_udp("127.0.0.2")))
        assert listening.value.errno == errno.EPIPE
    finally:
        listener.close()


def _errors_on(client: QuicSocket, relay: ImpairingRelay) -> None:
    """The errno of socket.c quic_sock_connection_migrate on an established client."""
    here = client.getsockname()
    cases = [
        (("127.0.0.2", 0), errno.EINVAL),  # port 0
        (tuple(here), errno.EINVAL),  # the address in use
        (("::1", free_udp()[1], 0, 0), errno.EINVAL),  # another family
    ]
    for addr, code in cases:
        with pytest.raises(OSError) as exc:
            client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(addr))
        assert exc.value.errno == code, addr
    relay.blackhole(1.0, "to_client")  # no PATH_RESPONSE can end the move before the next call
    client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(free_udp("127.0.0.2")))
    with pytest.raises(OSError) as busy:  # the switch is pending
        client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(free_udp("127.0.0.3")))
    assert busy.value.errno == errno.EAGAIN
    client.shutdown(socket.SHUT_RDWR)  # CLOSED: EPIPE (the QEMU tier checks the kernel's)
    with pytest.raises(OSError) as closed:
        client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(free_udp("127.0.0.2")))
    assert closed.value.errno == errno.EPIPE


@contextmanager
def preferred_pair(pki: Pki, preferred: tuple[str, int]) -> Iterator[tuple[QuicSocket, QuicSocket]]:
    """A sim client connected to a sim server that set `preferred` before its handshake."""
    server_config, client_config = _configs(pki)
    listener = QuicSocket(socket.AF_INET, backend="sim")
    listener.setsockopt(L.QUIC_SOCKOPT_ALPN, b"bulk")
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    accepted: list[QuicSocket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        conn.setsockopt(L.QUIC_SOCKOPT_EVENT, EVENT_ON)
        conn.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(preferred))
        quic_handshake(conn, server_config)
        accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = QuicSocket(socket.AF_INET, backend="sim")
    client.setsockopt(L.QUIC_SOCKOPT_ALPN, b"bulk")
    client.settimeout(10)
    try:
        client.connect(listener.getsockname())
        client.setsockopt(L.QUIC_SOCKOPT_EVENT, EVENT_ON)
        with pytest.raises(OSError) as not_server:  # ESTABLISHING: servers only
            client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(free_udp("127.0.0.2")))
        assert not_server.value.errno == errno.EINVAL
        quic_handshake(client, client_config)
        thread.join(10)
        assert accepted, "the server's handshake did not finish"
        yield client, accepted[0]
    finally:
        client.close()
        for sock in accepted:
            sock.close()
        listener.close()


def test_client_moves_to_the_servers_preferred_address(pki: Pki) -> None:
    preferred = free_udp("127.0.0.2")
    events: dict[str, list[bytes]] = {"server": [], "client": []}
    with preferred_pair(pki, preferred) as (client, server):
        thread = threading.Thread(target=echo_once, args=(server, events["server"], True), daemon=True)
        thread.start()
        client.send(b"to the preferred address", 0, fin=True)
        echoed = stream_to_fin(client, events["client"], want_event=True)
        thread.join(10)
        assert tuple(client.getpeername()) == preferred
        assert tuple(server.getsockname()) == preferred
    assert echoed == b"to the preferred address"
    # As the kernel: the client's socket stays (its peer moved: 0); the server's local
    # address changed (1).
    assert events == {"client": [bytes((MIGRATION, 0))], "server": [bytes((MIGRATION, 1))]}


def test_a_taken_preferred_address_is_refused_and_not_advertised() -> None:
    """The simulation binds the preferred address when it is set (the kernel when the
    handshake completes): a taken one fails there, and the server advertises nothing."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.2", 0))
    listener = QuicSocket(socket.AF_INET, backend="sim")
    client = QuicSocket(socket.AF_INET, backend="sim")
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)
        client.connect(listener.getsockname())
        client.settimeout(3)

        def hello() -> None:  # its ClientHello makes the server connection; the rest fails
            with contextlib.suppress(OSError, HandshakeError):
                quic_handshake(client, HandshakeConfig(alpns=["bulk"], verify=False, timeout=3))

        threading.Thread(target=hello, daemon=True).start()
        conn, _ = listener.accept()
        with conn:
            with pytest.raises(OSError) as exc:
                conn.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(taken.getsockname()))
            assert exc.value.errno == errno.EADDRINUSE
            blob = conn.getsockopt(L.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 512)
            assert TransportParameters.decode(blob, "server").preferred_address is None
    finally:
        client.close()
        listener.close()
        taken.close()


@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
def test_a_transfer_across_the_move_arrives_intact(pki: Pki, upload: bool) -> None:
    """The move starts as the transfer does (the new path is validated while data flows on
    the old one); 2 MiB arrive intact and both ends end up on the new address."""
    new_local = free_udp("127.0.0.2")
    data = payload(2 << 20)
    with connected_pair(*_configs(pki)) as (client, server):
        client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(new_local))
        result = transfer(client, server, data, upload=upload, timeout=30)
        assert tuple(client.getsockname()) == new_local
        assert tuple(server.getpeername()) == new_local
    assert result.intact
