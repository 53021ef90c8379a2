"""Path validation and connection migration (RFC 9000 §8.2, §9), as lxin/quic does them.

A connection has one validated path (AddressValidation.peer_addr, where its datagrams go)
and at most one alternative being validated (the kernel's path[1]), by one of three
starters:
- passive: a server gets a 1-RTT packet with the highest number so far from another peer
  address or at another of its local addresses (packet.c quic_packet_path_alt_process);
- active: QUIC_SOCKOPT_CONNECTION_MIGRATION in ESTABLISHED moves us to a new local address
  (socket.c quic_sock_connection_migrate);
- preferred address: a client that got the server's preferred_address moves there once
  HANDSHAKE_DONE arrives (frame.c quic_frame_handshake_done_process).
Each sends PATH_CHALLENGE on the new path with the destination CID chosen for it (§9.5,
connid.h quic_conn_id_select_alt), resends it every max(2 PTO, 1.5 s) up to three times and
then gives the path up (timer.c quic_timer_path_handler, outqueue.c quic_outq_probe_path_alt);
a matching PATH_RESPONSE moves the connection there, switches to that CID and raises
QUIC_EVENT_CONNECTION_MIGRATION whose byte says whether our local address changed (frame.c
quic_frame_path_response_process). Until then everything else keeps to the validated path,
so a spoofed or replayed source address cannot move the connection (§9.3.2, §9.3.3).
A PATH_RESPONSE goes back on the path its PATH_CHALLENGE came on (§8.2.2).

A path through one of the endpoint's other local sockets is a Route (peer address, local
address); a path through the endpoint's own socket is the bare peer address.
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["PathProbe", "Route", "CHALLENGE_DATAGRAM", "MAX_PROBES", "MIN_PATH_TIMEOUT",
           "peer_of", "local_of", "path_timeout"]

CHALLENGE_DATAGRAM = 1200  # §8.2.1: a datagram with PATH_CHALLENGE is expanded to this size
MAX_PROBES = 3  # resends before the path is given up (timer.c QUIC_MAX_ALT_PROBES)
MIN_PATH_TIMEOUT = 1.5  # seconds (timer.h QUIC_MIN_PATH_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Route:
    """A path through the endpoint's socket bound to `local` (not its own)."""

    peer: Any
    local: Any


def peer_of(path: Any) -> Any:
    """The peer's address on `path` (a Route or a bare peer address)."""
    return path.peer if type(path) is Route else path


def local_of(path: Any) -> Any:
    """Our local address on `path`; None for the endpoint's own socket."""
    return path.local if type(path) is Route else None


def path_timeout(pto: float) -> float:
    """The PATH_CHALLENGE resend interval (outqueue.c: max(2 PTO, QUIC_MIN_PATH_TIMEOUT))."""
    return max(2 * pto, MIN_PATH_TIMEOUT)


class PathProbe:
    """The one alternative path being validated (the kernel's path[1] and alt_state)."""

    __slots__ = ("alt_addr", "entropy", "received", "sent", "challenge_due", "moved_to", "deadline",
                 "probes", "waiting_for_cid", "responses", "preferred", "preferred_local",
                 "new_local_seq")

    def __init__(self) -> None:
        self.alt_addr: Any = None  # the path being validated (Route or peer address)
        self.entropy = b""
        self.received = 0  # bytes from alt_addr: its anti-amplification credit (§8.1, §9.3); -1: none needed
        self.sent = 0
        self.challenge_due = False
        self.moved_to: Any = None  # the last path validated and moved to
        self.deadline: float | None = None  # the next PATH_CHALLENGE resend, or giving up
        self.probes = 0  # resends so far
        # No destination CID left for a new path: a RETIRE_CONNECTION_ID asked for one
        # (QUIC_PATH_ALT_PENDING); the path it is for.
        self.waiting_for_cid: Any = None
        self.responses: list[tuple[bytes, Any]] = []  # PATH_RESPONSEs owed on other paths
        self.preferred: Any = None  # client: the server's preferred address, not moved to yet
        self.preferred_local: Any = None  # server: the preferred address we advertise, until used
        self.new_local_seq: int | None = None  # our CID the peer used on the path (passive)

    @property
    def busy(self) -> bool:
        """A path is being validated, waits for a CID, or a preferred address may still be
        moved to (EAGAIN for another migration, socket.c)."""
        return (self.alt_addr is not None or self.waiting_for_cid is not None
                or self.preferred is not None or self.preferred_local is not None)

    def start(self, path: Any, now: float, timeout: float, received: int | None = None) -> None:
        """Validate `path`: a PATH_CHALLENGE goes out with the next transmit. `received`:
        the bytes that came from a peer's new address (its amplification credit); None for
        a path of our choosing towards an address already validated."""
        self.alt_addr, self.entropy = path, os.urandom(8)
        self.received = -1 if received is None else received
        self.sent = self.probes = 0
        self.waiting_for_cid = None
        self.challenge_due = True
        self.deadline = now + timeout

    def on_packet(self, path: Any, size: int) -> bool:
        """A non-duplicate 1-RTT packet with the highest number so far came on `path`, not on
        the validated one. True if validation should start (nothing is being validated, as
        the kernel starts only from QUIC_PATH_ALT_NONE); otherwise a packet on the path being
        validated adds to its amplification credit."""
        if self.alt_addr is None and self.waiting_for_cid is None:
            return True
        if path == self.alt_addr and self.received >= 0:
            self.received += size
        return False

    def budget(self) -> int:
        """What may be sent to the unvalidated path: three times what came from it (§8.1);
        a full challenge on a path of our choosing."""
        if self.received < 0:
            return CHALLENGE_DATAGRAM
        return max(0, 3 * self.received - self.sent)

    def on_timer(self, now: float, timeout: float) -> Any:
        """The PATH timer fired: resend the challenge, or after MAX_PROBES resends give the
        path up; returns the path given up, else None."""
        if self.deadline is None or now < self.deadline:
            return None
        if self.probes < MAX_PROBES:
            self.probes += 1
            self.challenge_due = True
            self.deadline = now + timeout
            return None
        gone = self.alt_addr
        self.clear()
        return gone

    def clear(self) -> None:
        self.alt_addr, self.entropy, self.challenge_due, self.deadline = None, b"", False, None
        self.probes = 0

    def on_response(self, data: bytes) -> Any:
        """A PATH_RESPONSE: the validated new path if it answers our challenge, else None
        (a stale or forged response is ignored, §8.2.3)."""
        if self.alt_addr is None or not hmac.compare_digest(data, self.entropy):
            return None
        self.moved_to = self.alt_addr
        self.clear()
        return self.moved_to
