"""The harness daemon (worker_harness.py) in a subprocess, for the process-level tests."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

from quichsd import HandshakeConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def silent_address() -> tuple[socket.socket, tuple[str, int]]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    return udp, udp.getsockname()


def server(server_factory, pki):  # noqa: ANN001, ANN201
    return server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file))


class Daemon:
    """The harness daemon in a subprocess; requests and outcomes over AF_UNIX sockets."""

    def __init__(self, tmp_path, config_text: str, workers: int = 2, env: dict | None = None,  # noqa: ANN001
                 launcher: tuple[str, ...] = ()) -> None:
        self.config = tmp_path / "config"
        self.config.write_text(config_text)
        self.req, req_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.out, out_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.stderr = open(tmp_path / "stderr", "w+")  # noqa: SIM115 - the daemon's stderr, read back
        self.proc = subprocess.Popen(
            [sys.executable, *launcher, "-m", "tests.daemon.worker_harness", str(req_child.fileno()),
             str(out_child.fileno()),
             str(self.config), str(workers)],
            pass_fds=(req_child.fileno(), out_child.fileno()), cwd=ROOT, stderr=self.stderr,
            env={**os.environ, **(env or {})})
        req_child.close()
        out_child.close()
        self.events: list[dict] = []
        self.next_id = 0

    def wait_event(self, pred, timeout: float = 10) -> dict:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if pred(ev):
                    return ev
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no such event; got {self.events}")
            if select.select([self.out], [], [], remaining)[0]:
                self.events.append(json.loads(self.out.recv(65536)))

    def send(self, **msg) -> tuple[int, socket.socket]:  # noqa: ANN003
        self.next_id += 1
        mine, theirs = socket.socketpair()
        msg["id"] = self.next_id
        socket.send_fds(self.req, [json.dumps(msg).encode()], [theirs.fileno()])
        theirs.close()
        return self.next_id, mine

    def up_pids(self) -> set[int]:
        return {e["pid"] for e in self.events if e["event"] == "up"}

    def log(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def config_text(pki, timeout: float = 7.5, extra: str = "dbus = none\n") -> str:  # noqa: ANN001
    return (f"[authenticate.client]\nx509.truststore = {pki.ca_file}\n\n"
            f"[quichsd]\ndefault_timeout = {timeout}\n" + extra)
