"""Active migration and preferred_address against aioquic 1.7.2 (issue 13; RFC 9000 §9.2,
§9.6): our simulated client moves to a new local address with QUIC_SOCKOPT_CONNECTION_MIGRATION
and aioquic's server follows it; aioquic's client (which probes a server's preferred address
once the handshake is confirmed and moves there when the path validates) moves to the
preferred address our simulated server set before its handshake."""
from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from quichsd import HandshakeConfig, QuicSocket, quic_handshake
from quichsd.abi import lib as L
from quichsd.abi import pack_event_option
from quichsd.kernel_numbers import QuicEvent
from quichsd.sock.base import RecvKind
from quichsd.sock.sockaddr import pack_sockaddr
from tests.interop.test_aioquic_udp import Watched, aioquic_server, our_client  # noqa: F401
from tests.sim.test_socket_migration import free_udp
from tests.sockets import echo_upper, exchange

aioquic = pytest.importorskip("aioquic", reason="aioquic (the test peer) is not installed")
from aioquic.asyncio import connect  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402

pytestmark = pytest.mark.interop


def test_our_client_migrates_actively_against_aioquic_server(pki, aioquic_server) -> None:  # noqa: F811
    srv = aioquic_server()
    new_local = free_udp("127.0.0.2")
    sock = QuicSocket(socket.AF_INET, backend="sim")
    sock.connect(("127.0.0.1", srv.port))
    with sock:
        quic_handshake(sock, our_client(pki))
        assert exchange(sock, b"before") == b"BEFORE"  # aioquic has our CIDs by now
        sock.setsockopt(L.QUIC_SOCKOPT_EVENT, pack_event_option(QuicEvent.CONNECTION_MIGRATION, True))
        sock.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(new_local))
        sock.settimeout(5)
        event = sock.recv_item(64)  # the path validated: our local address changed
        assert event.kind is RecvKind.EVENT and event.data == bytes((QuicEvent.CONNECTION_MIGRATION, 1))
        assert exchange(sock, b"after the move") == b"AFTER THE MOVE"
        assert tuple(sock.getsockname()) == new_local
        (protocol,) = srv.protocols
        # aioquic moved to our new address once a non-probing packet came from there.
        assert tuple(protocol._quic._network_paths[0].addr[:2]) == new_local


def _preferred_server(pki, preferred: tuple[str, int], ready: threading.Event,
                      result: dict) -> QuicSocket:
    listener = QuicSocket(socket.AF_INET, backend="sim")
    listener.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    config = HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file, key_file=pki.key_file,
                             timeout=5)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(L.QUIC_SOCKOPT_CONNECTION_MIGRATION, pack_sockaddr(preferred))
                quic_handshake(conn, config)
                echo_upper(conn)
                result["local"] = tuple(conn.getsockname())
        except BaseException as exc:  # reported by the test
            result["error"] = exc
        finally:
            ready.set()

    threading.Thread(target=serve, daemon=True).start()
    return listener


def _ipv4(addr: tuple) -> tuple[str, int]:
    """aioquic's dual-stack socket names IPv4 peers as IPv4-mapped IPv6 addresses."""
    return addr[0].removeprefix("::ffff:"), addr[1]


async def _aioquic_client(pki, address: tuple[str, int], preferred: tuple[str, int]) -> tuple[bytes, tuple]:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost")
    cfg.load_verify_locations(pki.ca_file)
    async with connect(*address, configuration=cfg, create_protocol=Watched) as client:
        quic = client._quic
        await client.settle(lambda: _ipv4(quic._network_paths[0].addr) == preferred, timeout=3)
        moved_to = _ipv4(quic._network_paths[0].addr)
        reader, writer = await client.create_stream()
        writer.write(b"preferred")
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 5), moved_to


def test_aioquic_client_moves_to_our_preferred_address(pki) -> None:
    preferred = free_udp("127.0.0.2")
    ready, result = threading.Event(), {}
    listener = _preferred_server(pki, preferred, ready, result)
    try:
        data, moved_to = asyncio.run(_aioquic_client(pki, listener.getsockname()[:2], preferred))
        assert ready.wait(10)
    finally:
        listener.close()
    assert "error" not in result, result.get("error")
    assert moved_to == preferred  # aioquic validated the path and moved there
    assert data == b"PREFERRED"
    assert result["local"] == preferred  # our server's connection is on its preferred address
