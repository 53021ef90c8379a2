"""An injected request source for the worker/supervisor tests, run in a subprocess.

The test process plays the kernel: each request is a datagram on a shared AF_UNIX socket
(any worker may take it, as any tlshd may ACCEPT a READY) carrying a JSON description and,
by SCM_RIGHTS, one end of a stream socketpair: the request's "fd". The worker builds a real
sim QuicSocket from the description, runs handle(), reports the DONE status on the outcome
socket and closes the fd; if the worker dies, the kernel closes the fd and the test's end
reads EOF. Events on the outcome socket are JSON: up / taken / done / probe / stopped listening.

    python -m tests.daemon.worker_harness REQ_FD OUT_FD CONFIG_PATH WORKERS
"""
from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import sys
import threading

from quichsd import QuicSocket, abi
from quichsd.daemon import config as cfgmod
from quichsd.daemon.keyring import AuthMode
from quichsd.daemon.request import DoneResult, HandshakeRequest, MessageType
from quichsd.daemon.service import build_supervisor


class SocketSource:
    def __init__(self, req: socket.socket, out: socket.socket, config_provider=None) -> None:  # noqa: ANN001
        self.req, self.out = req, out
        self.config_provider = config_provider
        self.req.setblocking(False)
        self.requests: dict[int, tuple[int, QuicSocket]] = {}
        self.retiring = False  # set by retire_on(), once the worker was told to stop
        self.polling = 0  # next() calls in progress
        self._count = threading.Lock()
        self.send({"event": "up"})

    def retire_on(self, signum: int) -> None:
        """Chain the worker's stop handler for `signum`. Once it ran, "stopped listening" is
        reported when no next() call is in progress (at once, or when the one in progress
        returns): the worker looks at its stop flag before each call and makes no more."""
        stop = signal.getsignal(signum)

        def handler(sig, frame) -> None:  # noqa: ANN001
            stop(sig, frame)  # the worker's stop flag first
            self.retiring = True
            if not self.polling:
                self.send({"event": "stopped listening"})

        signal.signal(signum, handler)

    def send(self, msg: dict) -> None:
        msg["pid"] = os.getpid()
        self.out.send(json.dumps(msg).encode())

    def next(self, timeout: float):  # noqa: ANN201
        with self._count:
            self.polling += 1
        try:
            return self._next(timeout)
        finally:
            with self._count:
                self.polling -= 1
                if self.retiring:
                    self.send({"event": "stopped listening"})

    def _next(self, timeout: float):  # noqa: ANN202
        if not select.select([self.req], [], [], timeout)[0]:
            return None
        try:
            data, fds, _, _ = socket.recv_fds(self.req, 65536, 4)
        except BlockingIOError:  # another worker took it
            return None
        msg = json.loads(data)
        fd = fds[0]
        if msg.get("kind") == "probe":
            cfg = self.config_provider()
            self.send({"event": "probe", "id": msg["id"], "default_timeout": cfg.default_timeout})
            os.close(fd)
            return None
        sock = QuicSocket(socket.AF_INET, backend="sim")
        sock.connect(tuple(msg["address"]))
        sock.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, b"h3")
        self.requests[fd] = (msg["id"], sock)
        self.send({"event": "taken", "id": msg["id"]})
        return fd, HandshakeRequest(sock, MessageType.CLIENTHELLO, AuthMode.UNAUTH,
                                    peername="localhost", timeout_ms=msg.get("timeout_ms", 5000))

    def done(self, fd: int, result: DoneResult) -> None:
        rid, sock = self.requests.pop(fd)
        sock.close()
        self.send({"event": "done", "id": rid, "status": result.status})


def main(argv: list[str]) -> int:
    req_fd, out_fd, path, workers = int(argv[0]), int(argv[1]), argv[2], int(argv[3])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(process)d] %(levelname)s %(name)s: %(message)s")
    config = cfgmod.load_file(path)
    req = socket.socket(fileno=req_fd)
    out = socket.socket(fileno=out_fd)
    holder: dict = {}

    def factory() -> SocketSource:
        # Runs in the worker, after its privilege drop: probes report the worker's config.
        source = SocketSource(req, out, lambda: holder["config"])
        source.retire_on(signal.SIGUSR2)  # the supervisor's "retire" after a reload
        return source

    import quichsd.daemon.supervisor as sup
    real_run_worker = sup.run_worker

    def run_worker(source_factory, config, init=None, stats=None):  # noqa: ANN001, ANN202
        holder["config"] = config
        return real_run_worker(source_factory, config, init, stats)

    sup.run_worker = run_worker
    return build_supervisor(factory, config, path, workers=workers, stop_timeout=3).run()

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
