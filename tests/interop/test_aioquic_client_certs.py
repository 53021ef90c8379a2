"""CN-only client certificates (no subjectAltName, as NFS/SMB client certificates often
are) against aioquic over loopback UDP, our side on the simulation backend (issue 13):
aioquic's client presents one to our server, which verifies and accepts it (and refuses a
serverAuth-only one, which aioquic sees as CONNECTION_CLOSE 0x12a); our client presents
one to aioquic's server when it asks for one.

aioquic's server requests a client certificate only through a flag its own tests use, and
never verifies one (it checks the CertificateVerify signature): what it shows is that our
client sends the CN-only certificate and signs with its key."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quichsd import HandshakeError, quic_handshake
from quichsd.devcerts import demo_ca
from quichsd.tls.config import ClientAuth
from tests.sock.test_client_certificates import client_config, server_config, write_cn_only
from tests.sockets import client_socket, echo_upper, exchange, started_peers

aioquic = pytest.importorskip("aioquic", reason="aioquic (the test peer) is not installed")
from aioquic.asyncio import connect  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402

from tests.interop.test_aioquic_udp import AioquicServer, Echo, Watched  # noqa: E402

pytestmark = pytest.mark.interop


class Terminations(Watched):
    """An aioquic client connection that tells the CONNECTION_CLOSE it received as soon
    as aioquic has handled it (its ConnectionTerminated event only comes when draining
    ends, three PTOs later, on a timer)."""

    def close_code(self) -> int | None:
        event = self._quic._close_event
        return event.error_code if event is not None else None


async def _aioquic_client(port: int, ca_file: str, cert_file: str,
                          key_file: str) -> tuple[bytes | None, int | None]:
    """(the echo of our message, empty or None without one; the close code aioquic
    received, or None)."""
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost")
    cfg.load_verify_locations(ca_file)
    cfg.load_cert_chain(cert_file, key_file)
    async with connect("127.0.0.1", port, configuration=cfg, create_protocol=Terminations) as client:
        reader, writer = await client.create_stream()
        writer.write(b"from a cn-only client")
        writer.write_eof()
        try:
            data: bytes | None = await asyncio.wait_for(reader.read(), 5)
        except (ConnectionError, TimeoutError):
            data = None
        await client.settle(lambda: client.close_code() is not None, 0.0 if data else 5)
        return data, client.close_code()


def test_aioquic_client_with_cn_only_certificate_accepted(pki, server_factory, tmp_path) -> None:
    srv = server_factory("sim", server_config(pki), after=echo_upper)
    cert_file, key_file = write_cn_only(tmp_path, demo_ca())
    data, _ = asyncio.run(_aioquic_client(srv.address[1], pki.ca_file, cert_file, key_file))
    assert data == b"FROM A CN-ONLY CLIENT"
    (result,) = srv.wait()
    assert result.peer_certificates[0].subject.rfc4514_string() == "CN=nfs-client"


def test_aioquic_client_with_server_auth_only_cn_certificate_refused(pki, server_factory, tmp_path) -> None:
    srv = server_factory("sim", server_config(pki), after=echo_upper)
    cert_file, key_file = write_cn_only(tmp_path, demo_ca(), client=False)
    data, code = asyncio.run(_aioquic_client(srv.address[1], pki.ca_file, cert_file, key_file))
    assert not data and code == 0x12A  # bad_certificate (42), RFC 9001 §4.8
    (failure,) = srv.wait()
    assert isinstance(failure, HandshakeError) and failure.alert.name == "bad_certificate"
    assert "client authentication" in str(failure)


class _RequestingEcho(Echo):
    """aioquic's echo server connection, set to send a CertificateRequest (the flag
    aioquic's own tests set on its TLS context, made when the first Initial arrives)."""

    def __init__(self, quic, *args, **kw) -> None:
        super().__init__(quic, *args, **kw)
        initialize = quic._initialize

        def initialize_requesting(peer_cid: bytes) -> None:
            initialize(peer_cid)
            quic.tls._request_client_certificate = True

        quic._initialize = initialize_requesting


class RequestingServer(AioquicServer):
    def _protocol(self, *args, **kw) -> Echo:
        protocol = _RequestingEcho(*args, **kw)
        self.protocols.append(protocol)
        return protocol


@pytest.fixture
def requesting_server(pki):
    yield from started_peers(RequestingServer, pki)


def test_our_client_presents_cn_only_certificate_to_aioquic(pki, requesting_server, tmp_path: Path) -> None:
    srv = requesting_server()
    cert_file, key_file = write_cn_only(tmp_path, demo_ca())
    with client_socket("sim", ("127.0.0.1", srv.port)) as sock:
        result = quic_handshake(sock, client_config(pki, cert_file, key_file))
        assert result.alpn == "h3"
        assert exchange(sock, b"cn only to aioquic") == b"CN ONLY TO AIOQUIC"
    (protocol,) = srv.protocols
    peer = protocol._quic.tls._peer_certificate
    assert peer is not None and peer.subject.rfc4514_string() == "CN=nfs-client"


def test_our_server_requires_the_certificate(pki, server_factory) -> None:
    """Control: the same server refuses aioquic without a certificate, so the acceptance
    above is the certificate's doing (certificate_required, 0x174)."""
    srv = server_factory("sim", server_config(pki), after=echo_upper)
    assert server_config(pki).client_auth is ClientAuth.REQUIRED

    async def without_certificate() -> int | None:
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost")
        cfg.load_verify_locations(pki.ca_file)
        async with connect("127.0.0.1", srv.address[1], configuration=cfg,
                           create_protocol=Terminations) as client:
            await client.settle(lambda: client.close_code() is not None, 5)
            return client.close_code()

    assert asyncio.run(without_certificate()) == 0x174
