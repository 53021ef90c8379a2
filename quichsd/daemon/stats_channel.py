"""Handshake statistics from many worker processes to the one process that serves D-Bus.

Workers are separate processes (supervisor.py), so their counters meet in the status
process over one AF_UNIX datagram socket pair made by the supervisor before it forks.
Each datagram is one small JSON object:

    {"t": "s", "p": PID, "i": N}                       a request was accepted
    {"t": "d", "p": PID, "i": N, "peer": ..., "role": ..., "alpn": ..., "suite": ...,
     "status": ERRNO, "ms": DURATION}                  it ended

Only the public facts HandshakeStats keeps travel (no secrets, no identities). A worker
never waits for the status process: a full socket buffer drops the datagram, and a
missing status process costs nothing but the send.
"""
from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .stats import HandshakeStats

log = logging.getLogger(__name__)

MAX_DATAGRAM = 4096


class StatsPublisher:
    """The worker's end: HandshakeStats' feeding API, forwarded as datagrams."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.setblocking(False)
        self._pid = os.getpid()
        self._ids = itertools.count(1)
        self._starts: dict[int, float] = {}
        self._lock = threading.Lock()
        self.dropped = 0

    def record_start(self) -> int:
        with self._lock:
            token = next(self._ids)
            self._starts[token] = time.monotonic()
        self._send({"t": "s", "p": self._pid, "i": token})
        return token

    def record_done(self, token: int | None = None, *, peer: Any = "", role: Any = "", alpn: Any = "",
                    suite: Any = "", status: int = 0) -> None:
        with self._lock:
            started = self._starts.pop(token, None) if token is not None else None
        duration = (time.monotonic() - started) * 1000.0 if started is not None else 0.0
        self._send({"t": "d", "p": self._pid, "i": token, "peer": str(peer)[:128], "role": str(role)[:16],
                    "alpn": str(alpn)[:255], "suite": str(suite)[:64], "status": int(status), "ms": duration})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._sock.send(json.dumps(message, separators=(",", ":")).encode())
        except OSError as exc:  # full, or nobody listens: statistics are not worth a wait
            self.dropped += 1
            if exc.errno not in (errno.EAGAIN, errno.ECONNREFUSED, errno.ENOBUFS):
                log.debug("statistics datagram: %s", exc)


class StatsCollector:
    """The status process's end: datagrams into one HandshakeStats."""

    def __init__(self, stats: HandshakeStats) -> None:
        self.stats = stats
        self._open: dict[tuple[int, int], int] = {}

    def feed(self, datagram: bytes) -> None:
        try:
            message = json.loads(datagram)
            kind, key = message["t"], (int(message["p"]), int(message["i"]))
        except (ValueError, KeyError, TypeError):
            log.debug("ignoring a malformed statistics datagram")
            return
        if kind == "s":
            self._open[key] = self.stats.record_start()
        elif kind == "d":
            self.stats.record_done(self._open.pop(key, None), peer=message.get("peer", ""),
                                   role=message.get("role", ""), alpn=message.get("alpn", ""),
                                   suite=message.get("suite", ""), status=int(message.get("status", 0)),
                                   duration_ms=float(message.get("ms", 0.0)))

    def forget_dead(self, alive: Callable[[int], bool] = lambda pid: os.path.exists(f"/proc/{pid}")) -> int:
        """Requests of workers that died are no longer in flight: the kernel saw their fds
        close without a DONE. They count as failed (EIO). Returns how many there were."""
        dead = [key for key in self._open if not alive(key[0])]
        for key in dead:
            self.stats.record_done(self._open.pop(key), status=errno.EIO)
        return len(dead)

    @property
    def in_flight(self) -> int:
        return len(self._open)
