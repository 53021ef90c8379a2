"""`quichsd server`'s serving code (quichsd.echo) in this process, on either backend."""
from __future__ import annotations

import errno
import io
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from quichsd import HandshakeConfig, quic_handshake
from quichsd.echo import ServerOptions, echo_streams, serve
from tests.sockets import BACKENDS, client_socket

per_backend = pytest.mark.parametrize("backend", BACKENDS)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


def read_to_fin(sock) -> tuple[bytes, int]:
    data, fin, stream_id = b"", False, -1
    while not fin:
        chunk, stream_id, fin = sock.recv()
        data += chunk
    return data, stream_id


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
