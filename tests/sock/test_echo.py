"""`quichsd server`'s serving code (quichsd.echo) in this process, on either backend."""
from __future__ import annotations

import errno
import io
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from quichsd import HandshakeConfig, quic_handshake
from quichsd.echo import ServerOptions, echo_streams, serve
from tests.sock.pairs import read_to_fin
from tests.sockets import BACKENDS, client_socket, free_port

per_backend = pytest.mark.parametrize("backend", BACKENDS)


class EchoServer:
    """serve() on a thread; `died` holds what ended it early, `out` what it printed."""

    def __init__(self, backend: str, pki: Any) -> None:
        self.port = free_port()
        self.out = io.StringIO()
        self.ready, self.stop = threading.Event(), threading.Event()
        self.died: list[BaseException] = []
        opts = ServerOptions(f"127.0.0.1:{self.port}", "h3", pki.cert_file, pki.key_file, backend=backend)
        self.thread = threading.Thread(target=self._run, args=(opts,), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self, opts: ServerOptions) -> None:
        try:
            serve(opts, self.out, self.ready, self.stop)
        except BaseException as exc:
            self.died.append(exc)
            raise

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def echo_server(pki) -> Iterator[Any]:
    made: list[EchoServer] = []

    def make(backend: str) -> EchoServer:
        made.append(EchoServer(backend, pki))
        return made[-1]

    yield make
    for server in made:
        server.close()


def client_config(pki) -> HandshakeConfig:
    return HandshakeConfig(alpns=["h3"], hostname="localhost", cafile=pki.ca_file, timeout=10)


@per_backend
def test_a_unidirectional_stream_is_answered_on_a_server_stream(backend, pki, echo_server) -> None:
    """libquic's sample client sends on stream 2, which the server cannot send on: the echo
    comes back on a new server-initiated bidirectional stream (1, then 5), as libquic's
    sample server answers on stream 1. Bidirectional streams are answered on themselves."""
    srv = echo_server(backend)
    with client_socket(backend, ("127.0.0.1", srv.port)) as sock:
        quic_handshake(sock, client_config(pki))
        sock.settimeout(10)
        sock.send(b"hello quic server!", 2, new=True, uni=True, fin=True)
        assert read_to_fin(sock) == (b"hello quic server!", 1)
        sock.send(b"on a bidi stream", 0, new=True, fin=True)
        assert read_to_fin(sock) == (b"on a bidi stream", 0)
        sock.send(b"again", 6, new=True, uni=True)
        sock.send(b" uni", 6, fin=True)
        assert read_to_fin(sock) == (b"again uni", 5)
    assert not srv.died


class _Conn:
    """A connection whose stream data arrives but whose every send fails."""

    def __init__(self) -> None:
        self.items = [(b"abc", 0, True)]

    def recv(self) -> tuple[bytes, int, bool]:
        if self.items:
            return self.items.pop()
        raise OSError(errno.ENOTCONN, "closed")

    def send(self, data: bytes, stream_id: int, **kw: Any) -> int:
        raise OSError(errno.EPIPE, "Broken pipe")


def test_a_failed_echo_send_is_a_warning(caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="quichsd.echo"):
        echo_streams(_Conn(), "192.0.2.1:4433")  # type: ignore[arg-type]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "192.0.2.1:4433" in warnings[0] and "Broken pipe" in warnings[0]


def test_summary_of_a_peer_whose_subject_cannot_be_parsed() -> None:
    """An unverified peer's (--insecure) certificate may carry a malformed name, which
    cryptography parses lazily and refuses with TypeError (a BitString attribute under
    commonName, the shape fuzz/tls_engine found): the summary line says so instead of the
    client dying of a traceback."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from quichsd.echo import summary
    from quichsd.handshake import HandshakeResult

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zqzq")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    malformed = x509.load_der_x509_certificate(der.replace(b"\x0c\x04zqzq", b"\x03\x04\x00qzq"))
    with pytest.raises(TypeError):
        malformed.subject.rfc4514_string()

    def result(peer: x509.Certificate) -> HandshakeResult:
        return HandshakeResult(version=1, cipher_suite=0x1301, group=0x1D, alpn="h3",
                               peer_certificates=(peer,),
                               psk_identity=None, resumed=False, early_data_accepted=False)

    assert "peer=<malformed subject>" in summary(result(malformed))
    assert "peer=CN=zqzq" in summary(result(cert))
