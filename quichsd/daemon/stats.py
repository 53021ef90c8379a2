"""Handshake statistics: counters and a short history, safe to feed from any thread.

Only public, non-secret facts are kept: when, who (peer address), which role, the
negotiated ALPN and cipher suite *name*, how long it took and the errno it ended with.
Nothing that touches key material (secrets, keys, tickets, PSK identities, certificates)
is accepted: record_done() takes exactly these fields, each reduced to a short printable
string or a number, so a caller cannot smuggle bytes or arbitrary objects in.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["HandshakeStats", "errno_name"]

_MAX_TEXT = 128  # peers, ALPNs and suite names are all far shorter than this


def errno_name(status: int) -> str:
    """'OK' for 0, else the symbolic errno name (sign ignored), else 'E<number>'."""
    status = abs(int(status))
    if status == 0:
        return "OK"
    return _errno.errorcode.get(status, f"E{status}")


def _text(value: Any) -> str:
    """A short printable string; bytes are decoded as ASCII (ALPNs are on the wire as bytes)."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("ascii", "replace")
    else:
        text = value if isinstance(value, str) else str(value)
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:_MAX_TEXT]


class HandshakeStats:
    """Counters plus a bounded deque of recent handshakes, guarded by one lock.

    Usage::

        token = stats.record_start()
        ...
        stats.record_done(token, peer="192.0.2.1:443", role="client", alpn="h3",
                          suite="TLS_AES_128_GCM_SHA256", status=0)

    Listeners added with add_listener() are called with each finished record (a dict, the
    same shape as the entries of snapshot()["recent"]) *outside* the lock, in the thread
    that called record_done(); a listener that raises does not disturb the others.
    """

    def __init__(self, max_recent: int = 64, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if max_recent < 1:
            raise ValueError("max_recent must be at least 1")
        self._lock = threading.Lock()
        self._clock = clock
        self._monotonic = monotonic
        self._accepted = 0
        self._succeeded = 0
        self._failed: dict[str, int] = {}
        self._starts: dict[int, float] = {}
        self._tokens = itertools.count(1)
        self._recent: deque[dict[str, Any]] = deque(maxlen=max_recent)
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    # -- feeding -------------------------------------------------------------------------

    def record_start(self) -> int:
        """Count an accepted handshake; returns a token for record_done()."""
        now = self._monotonic()
        with self._lock:
            token = next(self._tokens)
            self._accepted += 1
            self._starts[token] = now
            return token

    def record_done(self, token: int | None = None, *, peer: Any = "", role: Any = "",
                    alpn: Any = "", suite: Any = "", status: int = 0,
                    duration_ms: float | None = None) -> dict[str, Any]:
        """Record a finished handshake; status 0 is success, otherwise an errno (either sign).

        The duration comes from the token's record_start() unless duration_ms is given.
        An unknown or missing token does not touch the in-flight count.
        Returns the stored record (a copy).
        """
        status = int(status)
        now = self._monotonic()
        with self._lock:
            started = self._starts.pop(token, None) if token is not None else None
            if duration_ms is None:
                duration_ms = (now - started) * 1000.0 if started is not None else 0.0
            if status == 0:
                self._succeeded += 1
            else:
                name = errno_name(status)
                self._failed[name] = self._failed.get(name, 0) + 1
            record = {
                "time": float(self._clock()),
                "peer": _text(peer),
                "role": _text(role),
                "alpn": _text(alpn),
                "suite": _text(suite),
                "duration_ms": max(0.0, float(duration_ms)),
                "status": abs(status),
                "status_name": errno_name(status),
            }
            self._recent.append(record)
            listeners = list(self._listeners)
        for listener in listeners:
            with contextlib.suppress(Exception):  # a broken listener must not break the handshake path
                listener(dict(record))
        return dict(record)

    # -- listeners -----------------------------------------------------------------------

    def add_listener(self, fn: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[dict[str, Any]], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    # -- reading -------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Flat counters: accepted, succeeded, failed, in_flight, and failed.<ERRNO> each."""
        with self._lock:
            out = {
                "accepted": self._accepted,
                "succeeded": self._succeeded,
                "failed": sum(self._failed.values()),
                "in_flight": len(self._starts),
            }
            for name, n in sorted(self._failed.items()):
                out[f"failed.{name}"] = n
            return out

    def recent(self) -> list[dict[str, Any]]:
        """Recent handshakes, oldest first (copies)."""
        with self._lock:
            return [dict(r) for r in self._recent]

    def snapshot(self) -> dict[str, Any]:
        """Everything as plain data (ints, floats, strings, dicts, lists)."""
        with self._lock:
            return {
                "accepted": self._accepted,
                "succeeded": self._succeeded,
                "failed": dict(sorted(self._failed.items())),
                "failed_total": sum(self._failed.values()),
                "in_flight": len(self._starts),
                "recent": [dict(r) for r in self._recent],
            }
