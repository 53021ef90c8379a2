"""Version Negotiation both ways and the endpoint's ALPN refusal, against aioquic 1.7.2 over
loopback UDP: aioquic's client starting with a version we do not speak falls back after our
server's Version Negotiation; our client offering v2 to an aioquic server that serves v1
only falls back to v1; an ALPN no listener takes is refused with 0x178 at once."""
from __future__ import annotations

import asyncio
import socket

import pytest

from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake
from tests.interop import test_aioquic_udp as udp
from tests.interop.test_aioquic_udp import V1, V2, Watched, our_client
from tests.sockets import echo_upper, exchange

aioquic = pytest.importorskip("aioquic", reason="aioquic (the test peer) is not installed")
from aioquic.asyncio import connect  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import ConnectionTerminated  # noqa: E402

pytestmark = pytest.mark.interop
aioquic_server = udp.aioquic_server  # the fixture: aioquic's server on its own loop
DRAFT29 = 0xFF00001D


class Recording(Watched):
    """Keeps how aioquic's connection ended."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.terminated: ConnectionTerminated | None = None

    def quic_event_received(self, event) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
        super().quic_event_received(event)


def _client_config(pki, versions: list[int], alpn: str = "h3") -> QuicConfiguration:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[alpn], server_name="localhost",
                            supported_versions=versions)
    cfg.load_verify_locations(pki.ca_file)
    return cfg


def _our_server(pki, server_factory):
    return server_factory("sim", HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                                 key_file=pki.key_file, timeout=5), after=echo_upper)


async def _echo_through(port: int, cfg: QuicConfiguration) -> tuple[bytes, int]:
    async with connect("127.0.0.1", port, configuration=cfg, create_protocol=Recording) as client:
        reader, writer = await client.create_stream()
        writer.write(b"after negotiation")
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 5)
        return data, client._quic._version


def test_aioquic_client_falls_back_after_our_version_negotiation(pki, server_factory) -> None:
    srv = _our_server(pki, server_factory)
    data, version = asyncio.run(asyncio.wait_for(
        _echo_through(srv.address[1], _client_config(pki, [DRAFT29, V1])), 10))
    assert data == b"AFTER NEGOTIATION" and version == V1
    assert srv.wait()[0].alpn == "h3"
    assert srv.sock.backend.endpoint_stats.version_negotiations == 1


def test_our_client_falls_back_to_the_only_version_aioquic_serves(pki, aioquic_server) -> None:
    srv = aioquic_server(version=V1)  # supported_versions [v1]: aioquic answers v2 with a VN
    sock = QuicSocket(socket.AF_INET, backend="sim")
    sock.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(version=V2))
    sock.connect(("127.0.0.1", srv.port))
    with sock:
        result = quic_handshake(sock, our_client(pki))
        assert result.alpn == "h3" and sock.backend.conn.version == V1
        assert set(sock.backend.conn.version_choice.negotiated_from) == {V1}  # aioquic's VN
        assert exchange(sock, b"in v1") == b"IN V1"


def test_aioquic_client_sees_no_application_protocol_within_a_second(pki, server_factory) -> None:
    """No listener takes "other": the endpoint answers 0x178 (RFC 9001 §8.1) at once; a
    silent drop would leave aioquic waiting 60 s, so the 1 s bound fails then."""
    srv = _our_server(pki, server_factory)
    made: list[Recording] = []

    def protocol(*args, **kw) -> Recording:
        made.append(Recording(*args, **kw))
        return made[-1]

    async def attempt() -> None:
        async with connect("127.0.0.1", srv.address[1], configuration=_client_config(pki, [V1], "other"),
                           create_protocol=protocol):
            pass

    with pytest.raises(ConnectionError):
        asyncio.run(asyncio.wait_for(attempt(), 1.0))
    (client,) = made
    assert client.terminated is not None and client.terminated.error_code == 0x178
    assert srv.results == [] and srv.sock.backend.endpoint_stats.no_listener == 1
