"""What a simulation endpoint lets in: limits on half-open server connections (RFC 9000
§8.1 address validation, §21.1 and §21.6 on handshake floods), and a counter per source.

A half-open connection is a server connection still ESTABLISHING. Those whose address
is not validated yet are cheap to make for anyone who can send a datagram with a forged
source, so beyond a few of them a token-less Initial is answered with a stateless Retry
and costs no state; only clients that receive at their address come back with a token.
Validated ones are counted apart: on loopback (or behind one NAT) an attacker and a
legitimate client share one source address, and the attacker's unvalidated Initials
must not lock the validated client out.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AdmissionLimits", "HalfOpen", "Admission", "RateLimitedLog"]


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Per endpoint (one UDP socket). The defaults let a client that follows a Retry in
    while 5,000 raw Initials a second arrive from its own address: the flood gets
    Retries (no state) once `retry_threshold_per_source` of its connections are half-open.

    retry_threshold: unvalidated half-open connections on the endpoint from which a
        token-less Initial gets a stateless Retry instead of a connection.
    retry_threshold_per_source: the same, counted per source IP address.
    max_half_open: all half-open connections on the endpoint; an Initial beyond it is
        dropped (its client retries; by then others may have completed or timed out).
    max_validated_per_source: half-open connections with a validated address per source
        IP address; beyond it, dropped.
    """

    retry_threshold: int = 32
    retry_threshold_per_source: int = 8
    max_half_open: int = 512
    max_validated_per_source: int = 128


@dataclass(slots=True)
class HalfOpen:
    source: str
    validated: bool


@dataclass
class Admission:
    """The endpoint's count of half-open connections (kept under the endpoint's lock)."""

    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    _open: dict[Any, HalfOpen] = field(default_factory=dict)
    _unvalidated: Counter[str] = field(default_factory=Counter)
    _validated: Counter[str] = field(default_factory=Counter)
    unvalidated_total: int = 0

    def __len__(self) -> int:
        return len(self._open)

    def wants_retry(self, source: str) -> bool:
        """A token-less Initial from `source` should get a Retry (the load is high)."""
        limits = self.limits
        return (self.unvalidated_total >= limits.retry_threshold
                or self._unvalidated[source] >= limits.retry_threshold_per_source)

    def refuses(self, source: str, validated: bool) -> str | None:
        """Why a new connection from `source` would be over a hard cap, or None."""
        if len(self._open) >= self.limits.max_half_open:
            return f"{len(self._open)} half-open connections on the endpoint"
        if validated and self._validated[source] >= self.limits.max_validated_per_source:
            return f"{self._validated[source]} validated half-open connections from {source}"
        return None

    def add(self, conn: Any, source: str, validated: bool) -> None:
        self._open[conn] = HalfOpen(source, validated)
        if validated:
            self._validated[source] += 1
        else:
            self._unvalidated[source] += 1
            self.unvalidated_total += 1

    def settle(self, conn: Any) -> None:
        """`conn` is no longer half-open (established, closed or gone), if it was."""
        entry = self._open.pop(conn, None)
        if entry is None:
            return
        counter = self._validated if entry.validated else self._unvalidated
        counter[entry.source] -= 1
        if counter[entry.source] <= 0:
            del counter[entry.source]
        if not entry.validated:
            self.unvalidated_total -= 1

    def counts(self, source: str) -> tuple[int, int]:
        """(unvalidated, validated) half-open connections from `source`."""
        return self._unvalidated[source], self._validated[source]


class RateLimitedLog:
    """At most one record per `interval` seconds at `level`; the others go to debug,
    and the next record says how many were folded into it."""

    def __init__(self, logger: logging.Logger, level: int, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._clock = clock
        self._level = level
        self._interval = interval
        self._next = 0.0
        self._folded = 0

    def __call__(self, msg: str, *args: Any) -> None:
        now = self._clock()
        if now < self._next:
            self._folded += 1
            self._log.debug(msg, *args)
            return
        self._next = now + self._interval
        if self._folded:
            msg += f" (and {self._folded} more since the last report)"
            self._folded = 0
        self._log.log(self._level, msg, *args)
