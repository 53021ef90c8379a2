"""Socket-tier fixtures: certificates on disk, a server thread, a client socket."""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from quichsd import HandshakeConfig, HandshakeError, QuicSocket, abi, quic_handshake
from quichsd.devcerts import PkiFiles, write_pki
from quichsd.sock.kernel import kernel_quic_available

# Inside the QEMU tier's guest the harness says why it has no QUIC module to offer.
NO_QUIC = (f"no IPPROTO_QUIC in the QEMU guest: {os.environ['QUICHSD_NO_QUIC_TREE']}"
           if os.environ.get("QUICHSD_NO_QUIC_TREE")
           else "no IPPROTO_QUIC in this kernel (needs the quic module; `make qemu` runs these)")
BACKENDS = [
    "sim",
    pytest.param("kernel", marks=pytest.mark.skipif(not kernel_quic_available(), reason=NO_QUIC)),
]


@pytest.fixture
def dgram_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected AF_UNIX datagram sockets: a socket fd to wrap without a QUIC module."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        yield a, b


def free_port() -> int:
    """A UDP port on 127.0.0.1 nobody holds right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


Pki = PkiFiles  # the fixture's type, as test modules annotate it


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return write_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Server:
    """A listener on loopback whose accepted connections run `quic_handshake(config)`
    (on `wrap(conn)` when given: a stand-in socket that changes what the handshake sees).

    Like `quichsd server`, it never dies of one connection: an accept() or handshake that
    fails with anything but a HandshakeError lands in `errors` (a failed handshake is an
    outcome, in `results`)."""

    backend: str
    config: HandshakeConfig
    alpn: bytes = b"h3"
    results: list[Any] = field(default_factory=list)
    after: Callable[[QuicSocket, Any], None] | None = None
    wrap: Callable[[QuicSocket], Any] | None = None

    def start(self) -> Server:
        self.sock = QuicSocket(socket.AF_INET, backend=self.backend)
        self.sock.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, self.alpn)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self.errors: list[Exception] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break  # stop() closed the listener under us
                self.errors.append(exc)
                time.sleep(0.01)
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: QuicSocket) -> None:
        try:
            result: Any = quic_handshake(conn if self.wrap is None else self.wrap(conn), self.config)
        except HandshakeError as exc:
            result = exc
        except Exception as exc:  # not an outcome the test expects: surfaced through errors
            self.errors.append(exc)
            return
        with self._changed:
            self.results.append(result)
            self._changed.notify_all()
        if self.after is not None and not isinstance(result, Exception):
            try:
                self.after(conn, result)
            except Exception as exc:  # surfaced through errors for the test to see
                self.errors.append(exc)

    def wait(self, n: int = 1, timeout: float = 10) -> list[Any]:
        """The first `n` handshake outcomes (results or HandshakeErrors)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.results) >= n, timeout)
        return self.results

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(backend: str, config: HandshakeConfig, **kw: Any) -> Server:
        srv = Server(backend, config, **kw).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


def client_socket(backend: str, address) -> QuicSocket:
    sock = QuicSocket(socket.AF_INET, backend=backend)
    sock.connect(address)
    return sock


def exchange(sock: QuicSocket, payload: bytes, timeout: float = 5) -> bytes:
    """A client's side of one stream: send `payload` with FIN, read the answer to its FIN."""
    sock.settimeout(timeout)
    sock.send(payload, -1, new=True, fin=True)
    received, fin = b"", False
    while not fin:
        chunk, _, fin = sock.recv()
        received += chunk
    return received


def echo_upper(conn: QuicSocket, result: Any = None) -> None:
    """A server's side of one stream: read it to FIN, answer upper-cased with FIN, then
    hold the connection until the client closes it."""
    conn.settimeout(5)
    data, fin, stream_id = b"", False, -1
    while not fin:
        chunk, stream_id, fin = conn.recv()
        data += chunk
    conn.send(data.upper(), stream_id, fin=True)
    with contextlib.suppress(OSError, TimeoutError):
        conn.recv()


def started_peers(cls: Callable[..., Any], *args: Any) -> Iterator[Callable[..., Any]]:
    """Fixture body for peer servers: a factory `make(**kw) -> cls(*args, **kw)`; every
    server it made is stopped at teardown."""
    made: list[Any] = []

    def make(**kw: Any) -> Any:
        peer = cls(*args, **kw)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.stop()
