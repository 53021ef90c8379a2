"""Retry against a QUIC stack nobody here wrote (aioquic 1.7.2, over loopback UDP): its
client follows our simulated server's Retry, and our client follows its server's; both
checks of the retry_source_connection_id / original_destination_connection_id transport
parameters pass on the other side (RFC 9000 §7.3, §17.2.5; RFC 9001 §5.8), v1 and v2."""
from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake
from tests.sockets import echo_upper, exchange

aioquic = pytest.importorskip("aioquic", reason="aioquic (the test peer) is not installed")
from aioquic.asyncio import connect, serve  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402

from tests.interop.test_aioquic_udp import Echo  # noqa: E402

pytestmark = pytest.mark.interop
L = abi.lib
V1, V2 = 0x00000001, 0x6B3343CF
VERSIONS = pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])


async def _aioquic_client(port: int, pki, version: int) -> tuple[bytes, int]:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost",
                            supported_versions=[version])
    cfg.load_verify_locations(pki.ca_file)
    async with connect("127.0.0.1", port, configuration=cfg) as client:
        reader, writer = await client.create_stream()
        writer.write(b"after a retry")
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 5)
        return data, client._quic._retry_count


@VERSIONS
def test_aioquic_client_follows_our_servers_retry(pki, server_factory, version: int) -> None:
    srv = server_factory("sim", HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                                key_file=pki.key_file, timeout=5), after=echo_upper)
    srv.sock.setsockopt(L.QUIC_SOCKOPT_CONFIG, abi.pack_config(validate_peer_address=1))
    data, retries = asyncio.run(asyncio.wait_for(_aioquic_client(srv.address[1], pki, version), 10))
    assert data == b"AFTER A RETRY" and retries == 1
    assert srv.sock.backend.endpoint_stats.retries_sent == 1
    assert srv.wait()[0].alpn == "h3"


class AioquicRetryServer:
    """aioquic's asyncio server with retry=True, on its own loop in a thread."""

    def __init__(self, pki, version: int) -> None:
        self.loop = asyncio.new_event_loop()
        cfg = QuicConfiguration(is_client=False, alpn_protocols=["h3"], supported_versions=[version])
        cfg.load_cert_chain(pki.cert_file, pki.key_file)
        self.cfg = cfg
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = await serve("127.0.0.1", 0, configuration=self.cfg, create_protocol=Echo,
                                      retry=True)
            self.port = self.server._transport.get_extra_info("sockname")[1]
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@VERSIONS
def test_our_client_follows_aioquic_servers_retry(pki, version: int) -> None:
    srv = AioquicRetryServer(pki, version)
    try:
        sock = QuicSocket(socket.AF_INET, backend="sim")
        sock.setsockopt(L.QUIC_SOCKOPT_CONFIG, abi.pack_config(version=version))
        sock.connect(("127.0.0.1", srv.port))
        with sock:
            config = HandshakeConfig(alpns=["h3"], hostname="localhost", cafile=pki.ca_file, timeout=5)
            quic_handshake(sock, config)
            assert sock.backend.retries_followed == 1
            # its retry_source_connection_id matched the Retry's SCID (else the handshake fails)
            assert sock.backend.conn.retry_scid is not None
            assert exchange(sock, b"over a retry") == b"OVER A RETRY"
    finally:
        srv.stop()
