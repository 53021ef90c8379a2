"""Test helpers for TLS 1.3 over TCP: our client and server on real sockets, application
data through the record layer after the handshake (the host has no kTLS), and foreign
peers (openssl, gnutls-bin) started as processes that are waited for by their own output."""
from __future__ import annotations

import contextlib
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from quichsd import devcerts
from quichsd.tcp.handshake import ApplicationKeys, TcpTlsHandshake
from quichsd.tcp.record import HEADER_LEN, ContentType, RecordProtection, parse_alert, parse_header
from quichsd.tls.certs import TrustStore
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import ClientAuth, Credentials, ExternalPsk, TlsConfig
from quichsd.tls.constants import CipherSuite, NamedGroup
from quichsd.tls.events import HandshakeComplete
from quichsd.tls.server import ServerEngine
from tests.pki import leaf, test_ca

TIMEOUT = 10.0
# IANA names as openssl's -ciphersuites and GnuTLS's priority strings spell them.
OPENSSL_SUITES = {
    CipherSuite.AES_128_GCM_SHA256: "TLS_AES_128_GCM_SHA256",
    CipherSuite.AES_256_GCM_SHA384: "TLS_AES_256_GCM_SHA384",
    CipherSuite.CHACHA20_POLY1305_SHA256: "TLS_CHACHA20_POLY1305_SHA256",
}
GNUTLS_CIPHERS = {
    CipherSuite.AES_128_GCM_SHA256: "AES-128-GCM",
    CipherSuite.AES_256_GCM_SHA384: "AES-256-GCM",
    CipherSuite.CHACHA20_POLY1305_SHA256: "CHACHA20-POLY1305",
}
ALL_SUITES = list(OPENSSL_SUITES)
PSK_IDENTITY = b"quichsd-test"
PSK_KEY = bytes(range(32))


def require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (Debian package {package}; `make system-deps` installs it)")
    return path


# -- credentials on disk, for the foreign peers ---------------------------------------------------


@dataclass
class Files:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it alone must fail


def write_pki(directory: Path) -> Files:
    """devcerts.write_pki's CA, certificate and key, and a CA that signed none of them."""
    from tests.pki import make_ca

    pki = devcerts.write_pki(directory)
    files = Files(Path(pki.ca_file), Path(pki.cert_file), Path(pki.key_file), directory / "other.pem")
    files.other_ca.write_bytes(make_ca("not the test CA").cert.public_bytes(Encoding.PEM))
    return files


def our_credentials() -> Credentials:
    cert, key = leaf("p256")
    return Credentials([cert], key)


def trust(*, other: bool = False) -> TrustStore:
    from tests.pki import make_ca

    return TrustStore.from_certificates([make_ca("not the test CA").cert if other else test_ca().cert])


def tcp_config(*, suites: Sequence[CipherSuite] = ALL_SUITES, groups: Sequence[NamedGroup] | None = None,
               **kwargs: Any) -> TlsConfig:
    """A TlsConfig for TLS over TCP (no ALPN, no QUIC transport parameters)."""
    if groups is not None:
        kwargs["groups"] = tuple(groups)
    return TlsConfig(alpn_protocols=(), quic=False, cipher_suites=tuple(suites), **kwargs)


def client_config(*, psk: bytes | None = None, untrusted: bool = False, with_cert: bool = False,
                  **kwargs: Any) -> TlsConfig:
    if psk is not None:
        return tcp_config(psks=[ExternalPsk(PSK_IDENTITY, psk)], verify_peer=False, **kwargs)
    extra: dict[str, Any] = {"credentials": our_credentials()} if with_cert else {}
    return tcp_config(server_name="localhost", trust=trust(other=untrusted), **extra, **kwargs)


def server_config(*, psk: bytes | None = None, client_auth: ClientAuth = ClientAuth.OPTIONAL,
                  **kwargs: Any) -> TlsConfig:
    if psk is not None:
        return tcp_config(psks=[ExternalPsk(PSK_IDENTITY, psk)], **kwargs)
    return tcp_config(credentials=our_credentials(), trust=trust(), client_auth=client_auth, **kwargs)


# -- application data after the handshake, in userspace ------------------------------------------


class AppChannel:
    """Application data records under the handshake's application keys, proving them right
    (what kTLS would do in the kernel). Post-handshake handshake records (tickets) are
    skipped; an alert ends the channel."""

    def __init__(self, sock: socket.socket, keys: ApplicationKeys) -> None:
        self.sock = sock
        self._tx = RecordProtection(keys.tx, keys.tx_sequence)
        self._rx = RecordProtection(keys.rx, keys.rx_sequence)
        self.skipped: list[ContentType] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(self._tx.seal_all(ContentType.APPLICATION_DATA, data))

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError("peer closed")
            data += chunk
        return data

    def recv_until(self, marker: bytes) -> bytes:
        got = b""
        while marker not in got:
            header = self._exact(HEADER_LEN)
            body = self._exact(parse_header(header, protected=True).length)
            content_type, content = self._rx.open(header, body)
            if content_type == ContentType.APPLICATION_DATA:
                got += content
            elif content_type == ContentType.ALERT:
                raise EOFError(f"peer sent alert {parse_alert(content)!r}")
            else:
                self.skipped.append(content_type)
        return got


# -- our two roles on real sockets ---------------------------------------------------------------


@dataclass
class Outcome:
    complete: HandshakeComplete | None = None
    keys: ApplicationKeys | None = None
    error: BaseException | None = None
    received: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


def _converse(sock: socket.socket, engine: ClientEngine | ServerEngine, send: bytes, until: bytes,
              out: Outcome) -> None:
    """Handshake on `sock` with `engine`, send `send`, read until `until` comes back; what
    happened goes into `out` (a failure raises)."""
    hs = TcpTlsHandshake(sock, engine)
    out.complete = hs.run(TIMEOUT)
    out.keys = hs.keys
    out.extra["ccs"] = hs.dropped_change_cipher_spec
    assert out.keys is not None
    channel = AppChannel(sock, out.keys)
    channel.send(send)
    out.received = channel.recv_until(until)
    out.extra["skipped"] = channel.skipped


def our_client(port: int, config: TlsConfig, send: bytes, until: bytes) -> Outcome:
    """Connect, handshake, send `send`, read until `until` comes back; errors in Outcome."""
    out = Outcome()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        try:
            _converse(sock, ClientEngine(config), send, until, out)
        except Exception as exc:  # the test looks at it
            out.error = exc
    return out


class OurServer:
    """One connection served on 127.0.0.1 by our server in a thread: handshake, send
    `send`, read until `until`."""

    def __init__(self, config: TlsConfig, send: bytes, until: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.outcome = Outcome()
        self._args = (config, send, until)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        config, send, until = self._args
        out = self.outcome
        try:
            self.listener.settimeout(TIMEOUT)
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                _converse(conn, ServerEngine(config), send, until, out)
        except Exception as exc:
            out.error = exc
        finally:
            self.listener.close()

    def join(self) -> Outcome:
        self._thread.join(TIMEOUT + 5)
        assert not self._thread.is_alive(), "our server did not finish"
        return self.outcome


# -- foreign peers ---------------------------------------------------------------------------------


class Peer:
    """A peer process whose stdout and stderr are read by threads into one queue of lines,
    so a test waits for a line (readiness, data) with a deadline instead of sleeping."""

    def __init__(self, argv: Sequence[str], stdin: bytes | None = None) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.seen: list[bytes] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._pumps = [threading.Thread(target=self._pump, args=(stream,), daemon=True)
                       for stream in (self.proc.stdout, self.proc.stderr)]
        for pump in self._pumps:
            pump.start()
        if stdin is not None:
            self.write(stdin)

    def _pump(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed under us by a stop() that timed out
            for line in iter(stream.readline, b""):
                self.lines.put(line)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def wait_for(self, marker: bytes, timeout: float = TIMEOUT) -> bytes:
        """The first line holding `marker`; AssertionError with all output on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                text = self.output()
                raise AssertionError(f"{self.argv[0]} never printed {marker!r}; output: {text!r}") from None
            self.seen.append(line)
            if marker in line:
                return line

    def exited_output(self, timeout: float = TIMEOUT) -> bytes:
        """Everything it printed, once it has exited (it is not stopped)."""
        self.proc.wait(timeout)
        for pump in self._pumps:
            pump.join(timeout)
        return self.output()

    def output(self) -> bytes:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return b"".join(self.seen)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pump in self._pumps:  # the process is gone: its pipes reach EOF
            pump.join(TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):  # stdin's flush when the peer is gone
                    stream.close()


@contextlib.contextmanager
def peer(argv: Sequence[str], ready: bytes | None = None, stdin: bytes | None = None) -> Iterator[Peer]:
    p = Peer(argv, stdin)
    try:
        if ready is not None:
            p.wait_for(ready)
        yield p
    finally:
        p.stop()


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
