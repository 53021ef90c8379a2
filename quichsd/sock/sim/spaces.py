"""The packet number spaces of one connection (RFC 9000 §12.3: Initial, Handshake, and
Application for 0-RTT and 1-RTT), the loss recovery over them (RFC 9002, recovery.py) and
the probe packets owed per space after a probe timeout."""
from __future__ import annotations

from .congestion import RENO
from .levels import APP, HANDSHAKE, INITIAL
from .recovery import PacketSpace, Recovery

__all__ = ["PacketSpaces", "LossTimer"]

# (when, space, is the loss timer: else the probe timeout)
LossTimer = tuple[float, int, bool]


class PacketSpaces:
    __slots__ = ("by_id", "recovery", "probes")

    def __init__(self, initial_rtt: float, congestion_algo: int = RENO, *, is_client: bool = False) -> None:
        self.by_id = {space: PacketSpace() for space in (INITIAL, HANDSHAKE, APP)}
        self.recovery = Recovery(initial_rtt, congestion_algo)
        if is_client:  # RFC 9002 A.7: the server validated us once it ACKs beyond Initial
            self.recovery.peer_validated = False
            self.by_id[INITIAL].proves_address = False
        self.probes: dict[int, int] = {}  # space -> ack-eliciting probe packets owed

    def discard(self, space: int) -> None:
        """The space's keys are gone: its packets leave the flight and the probe timeout
        backs off no more (RFC 9002 §6.4, OnPacketNumberSpaceDiscarded in A.11)."""
        self.recovery.forget(self.by_id[space].discard())
        self.recovery.pto_count = 0
        self.probes.pop(space, None)

    def abandon_initial(self) -> None:
        """After a Retry the Initials sent so far leave the flight (RFC 9002 §6.3)."""
        self.recovery.forget(self.by_id[INITIAL].abandon_sent())
        self.probes.pop(INITIAL, None)

    def loss_timer(self, *, app_probes: bool, max_ack_delay: float) -> LossTimer | None:
        """The earliest loss time (§6.1.2), else the earliest probe timeout (§6.2.1) of the
        spaces with ack-eliciting packets in flight; `app_probes`: the handshake is confirmed
        (no 1-RTT PTO before, §6.2.1); `max_ack_delay`: the peer's, in seconds."""
        self.recovery.max_ack_delay = max_ack_delay  # for persistent congestion (§7.6.1)
        earliest: LossTimer | None = None
        for sid, space in self.by_id.items():
            if space.loss_time is not None and (earliest is None or (space.loss_time, sid) < earliest[:2]):
                earliest = (space.loss_time, sid, True)
        if earliest is not None:
            return earliest
        best: LossTimer | None = None
        for sid, space in self.by_id.items():
            if space.discarded or space.last_ack_eliciting_time is None:
                continue
            if not space.has_ack_eliciting_in_flight():
                continue
            if sid == APP and not app_probes:
                continue
            pto = self.recovery.pto_interval(max_ack_delay if sid == APP else 0.0)
            when = space.last_ack_eliciting_time + pto
            if best is None or when < best[0]:
                best = (when, sid, False)
        return best

    def ack_timer(self, best: float | None, hold: float | None) -> float | None:
        """The earlier of `best`, the pacer's next send and the spaces' ACK deadlines;
        held ACKs are due when the hold ends."""
        paced = self.recovery.pace_until
        if paced is not None and (best is None or paced < best):
            best = paced
        for space in self.by_id.values():
            due = space.ack_deadline
            if due is None or space.discarded:
                continue
            if hold is not None and due < hold:
                due = hold
            if best is None or due < best:
                best = due
        return best

    def probe_owed(self, space: int) -> None:
        """A probe timeout fired for `space`: two probes if it has ack-eliciting packets in
        flight, else one (RFC 9002 §6.2.4)."""
        self.probes[space] = 2 if self.by_id[space].has_ack_eliciting_in_flight() else 1
