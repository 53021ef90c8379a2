"""`quichsd server`'s threads: handshakes on a bounded pool, accept() only when a pool thread
is free, a thread that cannot start refuses one connection and never ends the server, and
lines of concurrent handshakes that stay whole."""
from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from quichsd import HandshakeConfig, HandshakeError, QuicSocket, quic_handshake
from quichsd.echo import ServerOptions, serve
from tests.processes import start, stop
from tests.sockets import exchange, free_port

LINE = re.compile(r"handshake with 127\.0\.0\.1:\d+ (succeeded: alpn=h3 suite=\w+ group=\w+ peer=\S+ "
                  r"resumed=(yes|no) 0rtt=(yes|no)|failed: [^\n]+)")


class YieldingStream(io.StringIO):
    """A stream that lets other threads run inside every write, as a pipe's write may, and
    notes how many handshake pool threads are alive at each line."""

    def __init__(self, listen: str) -> None:
        super().__init__()
        self.pool_threads: list[int] = []
        self.pool_name = f"handshake {listen} #"  # BoundedPool's thread names in serve()

    def write(self, text: str) -> int:
        self.pool_threads.append(sum(t.name.startswith(self.pool_name) for t in threading.enumerate()))
        written = 0
        for char in text:  # any other thread may write between two characters
            written += super().write(char)
            time.sleep(0)
        return written


def echo_once(port: int, pki: Any, data: bytes = b"ping") -> bytes:
    with handshake_once(port, pki) as sock:
        return exchange(sock, data, timeout=20)


def test_a_bounded_pool_serves_a_burst_with_whole_lines(pki) -> None:
    """24 clients at once against 3 handshake threads: every one is served (the others wait
    in the backlog), no more than 3 pool threads ever exist, and each of the 24 lines the
    server prints is whole although every write lets the other threads in."""
    port = free_port()
    out = YieldingStream(f"127.0.0.1:{port}")
    ready, stop = threading.Event(), threading.Event()
    opts = ServerOptions(f"127.0.0.1:{port}", "h3", pki.cert_file, pki.key_file, backend="sim",
                         handshake_workers=3)
    server = threading.Thread(target=serve, args=(opts, out, ready, stop), daemon=True)
    server.start()
    assert ready.wait(10)
    echoes: list[bytes | Exception] = []

    def one(i: int) -> None:
        try:
            echoes.append(echo_once(port, pki, b"ping %d" % i))
        except (HandshakeError, OSError) as exc:
            echoes.append(exc)

    clients = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    try:
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
    finally:
        stop.set()
        server.join(10)
    assert sorted(echoes, key=repr) == sorted((b"ping %d" % i for i in range(24)), key=repr)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("listening on")
    assert len(lines) == 25, lines
    for line in lines[1:]:
        assert LINE.fullmatch(line), line
    assert 1 <= max(out.pool_threads) <= 3, out.pool_threads


def handshake_once(port: int, pki: Any) -> QuicSocket:
    sock = QuicSocket(socket.AF_INET, backend="sim")
    try:
        sock.connect(("127.0.0.1", port))
        quic_handshake(sock, HandshakeConfig(alpns=["h3"], cafile=pki.ca_file, hostname="localhost",
                                             timeout=20))
    except BaseException:
        sock.close()
        raise
    return sock


def test_a_thread_that_cannot_start_refuses_one_connection_only(pki) -> None:
    """The server in a process that can start five more threads (tests/sock/thread_limited:
    stacks of 256 MiB under RLIMIT_AS, since root ignores RLIMIT_NPROC), with 8 handshake
    workers. Eight clients that keep their connections need more threads (a handshake's,
    then an echo's each): those that get none are refused with one log line each, the
    server lives on, and once they close, the next client's handshake is served."""
    port = free_port()
    proc = start(
        [sys.executable, "-m", "tests.sock.thread_limited", "5", "quichsd", "server", "--listen",
         f"127.0.0.1:{port}",
         "--cert", pki.cert_file, "--key", pki.key_file, "--alpn", "h3", "--backend", "sim",
         "--handshake-workers", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, MALLOC_ARENA_MAX="1"),
    )
    held: list[QuicSocket] = []
    try:
        assert proc.stdout.readline().startswith("listening on")
        failures: list[Exception] = []

        def one() -> None:
            try:
                held.append(handshake_once(port, pki))
            except (HandshakeError, OSError) as exc:
                failures.append(exc)

        burst = [threading.Thread(target=one) for _ in range(8)]
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join(60)
        assert proc.poll() is None, proc.communicate()
        for sock in held:
            sock.close()
        for _ in range(20):  # the refused and the closed connections' threads are freed
            try:
                handshake_once(port, pki).close()
                break
            except (HandshakeError, OSError):
                continue
        else:
            raise AssertionError(f"no handshake was served after the burst ({len(failures)} failed in it)")
        assert proc.poll() is None
    finally:
        for sock in held:
            sock.close()
        _, err = stop(proc, timeout=20)
    refusals = [line for line in err.splitlines() if "refused: no thread for its" in line]
    assert refusals, err  # the limit did bite: thread creation failed
    assert "Traceback" not in err and "can't start new thread" not in err, err
