"""The connection's state (ESTABLISHING, ESTABLISHED, CLOSED) and the steps that change
several of its parts at once: completion (spec §2.4), the handshake's confirmation,
discarding a level's keys, closing, following a Retry, a compatible version change or a
Version Negotiation, and queuing the control frames those steps owe the peer.

The receiving half, the sending half and the socket calls (receiver.py, sender.py,
connection.py) all reach these steps through this one object, which refers to the parts
and to nothing that refers back to it."""
from __future__ import annotations

from ...quic.errors import QuicError, QuicErrorCode
from ...quic.packet_protection import PacketKey, initial_keys
from . import frames as fr
from .address import AddressValidation
from .cids import ConnectionIds
from .close import CloseState
from .crypto_stream import CryptoStream, CryptoStreams
from .keys import KeyPhase, LevelKeys
from .levels import APP, EARLY, HANDSHAKE, INITIAL
from .params import TransportParams
from .spaces import PacketSpaces
from .state import ConnState
from .timers import Timers
from .version_choice import VersionChoice

__all__ = ["Lifecycle", "CID_ISSUE_DELAY"]

# The NEW_CONNECTION_IDs of the completion step are issued in idle time (idle_work): while
# the socket waits, or by the endpoint's reactor; at the latest this long after completion
# (a timer), so they never hold up the datagram carrying the client's Finished. RFC 9000
# §5.1.1 sets no deadline for them.
CID_ISSUE_DELAY = 0.002

_ESTABLISHED, _CLOSED = ConnState.ESTABLISHED, ConnState.CLOSED


class Lifecycle:
    __slots__ = ("is_client", "state", "handshake_confirmed", "keys", "spaces", "crypto", "cids", "timers",
                 "close", "address", "version", "params", "pending", "restart_pending")

    def __init__(self, *, is_client: bool, keys: LevelKeys, spaces: PacketSpaces, crypto: CryptoStreams,
                 cids: ConnectionIds, timers: Timers, close: CloseState, address: AddressValidation,
                 version: VersionChoice, params: TransportParams, pending: list[fr.Frame]) -> None:
        self.is_client = is_client
        self.state = ConnState.ESTABLISHING
        self.handshake_confirmed = False
        self.keys = keys
        self.spaces = spaces
        self.crypto = crypto
        self.cids = cids
        self.timers = timers
        self.close = close
        self.address = address
        self.version = version
        self.params = params
        self.pending = pending  # connection-level control frames for 1-RTT packets
        # client: a Version Negotiation restarted the connection; the handshake agent is
        # told once (its next handshake read), to send a new ClientHello
        self.restart_pending = False

    # ---- keys and versions -----------------------------------------------------------------

    def install_initial_keys(self, keys: tuple[PacketKey, PacketKey] | None = None) -> None:
        """`keys`: (client, server) already derived for the Initial DCID in this version."""
        client, server = keys or initial_keys(self.cids.initial_cid, self.version.qv)
        self.keys.install_initial(client, server, self.is_client)

    def change_version(self, version: int) -> None:
        """Compatible version negotiation (RFC 9368 §2.3): new Initial keys, same DCID."""
        keys = self.keys
        if INITIAL in keys.recv:
            keys.alt_initial_recv[self.version.version] = keys.recv[INITIAL]
        self.version.switch(version)
        if INITIAL not in keys.discarded:
            self.install_initial_keys()

    def discard_level(self, level: int) -> None:
        """A level's keys are done with (RFC 9001 §4.9): its packets in flight count as
        acknowledged, nothing more is sent or received at it."""
        if not self.keys.discard(level):
            return
        self.spaces.discard(level)
        self.crypto[level].send.reset()

    def follow_retry(self, scid: bytes, token: bytes) -> None:
        """A valid Retry (RFC 9000 §17.2.5.2; the receiver checked it): the next Initial
        goes to the Retry's SCID with its token, under Initial keys from that SCID (RFC
        9001 §5.2), carrying the same ClientHello CRYPTO data; packet numbers go on
        (§17.2.5.3), the Initials sent so far leave the flight (RFC 9002 §6.3)."""
        self.address.retries_followed += 1
        self.address.token = token
        self.cids.follow_retry(scid)
        self.install_initial_keys()
        self.spaces.abandon_initial()
        self.crypto[INITIAL].send.retransmit_all()

    def on_version_negotiation(self, versions: tuple[int, ...], dcid: bytes, scid: bytes) -> bool:
        """A Version Negotiation packet listing `versions` (RFC 9000 §6.2, §17.2.1): a client
        acts on one only before it processed any other packet of the server (or a Retry,
        or an earlier one), addressed to it with the DCID it used, and not listing the
        version it offered. A version in common restarts the connection in it (RFC 9368
        §2.1): new Initial keys for the same DCID, the old Initials and ClientHello dropped,
        and the agent asked for a new ClientHello; none in common closes the connection
        (0x11, nothing sent: the server kept no state). True if it was acted on."""
        cids = self.cids
        if (not self.is_client or self.state is not ConnState.ESTABLISHING or cids.server_scid_seen
                or self.address.retries_followed or self.version.negotiated_from is not None):
            return False
        if dcid != cids.local_cid or scid != cids.original_dcid:
            return False
        try:
            chosen = self.version.answer_negotiation(versions)
        except QuicError as exc:
            self.close.info = (int(exc.error_code), 0, exc.reason.encode()[:63])
            self.close.frames = []
            self.enter_closed()
            return True
        if chosen is None:
            return False
        self.version.restart(chosen, versions)
        self.install_initial_keys()
        self.spaces.abandon_initial()
        self.crypto[INITIAL] = CryptoStream()  # the new ClientHello starts at offset 0
        self.keys.send.pop(EARLY, None)  # 0-RTT of the old attempt is lost (RFC 9368 §2.1)
        self.restart_pending = True
        return True

    # ---- completion ------------------------------------------------------------------------

    def complete(self) -> None:
        """Both 1-RTT keys are in: the kernel's completion step (spec §2.4). Its
        NEW_CONNECTION_IDs are only scheduled (CID_ISSUE_DELAY)."""
        self.state = _ESTABLISHED
        if not self.is_client:
            self.timers.hold_until = None  # HANDSHAKE_DONE leaves now (a client's Finished follows)
            self.confirm()  # all Handshake packets count as acknowledged
            self.queue_new_token()
            self.pending.append(fr.HandshakeDone())
        self.cids.due = self.timers.now + CID_ISSUE_DELAY

    def confirm(self) -> None:
        """The handshake is confirmed (RFC 9001 §4.1.2): the Handshake keys go (§4.9.2)."""
        self.handshake_confirmed = True
        self.discard_level(HANDSHAKE)

    def queue_new_token(self) -> bool:
        """A NEW_TOKEN frame for the client's next connection; False without a token source."""
        frame = self.address.new_token()
        if frame is None:
            return False
        self.pending.append(frame)
        return True

    def issue_connection_ids(self) -> bool:
        """NEW_CONNECTION_IDs up to the peer's limit (ConnectionIds.issue); True if any was
        queued."""
        frames = self.cids.issue(self.params.peer["active_connection_id_limit"])
        self.pending.extend(frames)
        return bool(frames)

    # ---- close -----------------------------------------------------------------------------

    def close_locally(self, code: int, frame_type: int, phrase: bytes, app: bool = False) -> None:
        self.close.info = (code, frame_type, phrase)
        frames: list[tuple[int, fr.ConnectionClose]] = []
        if self.state is _ESTABLISHED and APP in self.keys.send:
            # Only the 1-RTT close, though RFC 9000 §10.2.3 suggests (SHOULD) a Handshake copy
            # until the handshake is confirmed: a peer server that has our Finished but has
            # not yet installed its keys would read that copy and abandon a handshake that
            # succeeded; the 1-RTT close is read once it has. (Coalescing both the other way
            # round is impossible: nothing may follow a short header, RFC 9000 §12.2.)
            frames.append((APP, fr.ConnectionClose(code, frame_type, phrase, app)))
        else:
            # Without 1-RTT keys the peer can only read Initial/Handshake packets; an
            # application close there becomes APPLICATION_ERROR (RFC 9000 §10.2.3).
            hs_code = QuicErrorCode.APPLICATION_ERROR if app else code
            for level in (INITIAL, HANDSHAKE):
                if level in self.keys.send:
                    frames.append((level, fr.ConnectionClose(int(hs_code), 0 if app else frame_type, phrase)))
        self.close.frames = frames
        self.enter_closed()

    def enter_closed(self) -> None:
        self.state = _CLOSED
        self.timers.idle_deadline = None
        self.cids.due = None  # NEW_CONNECTION_IDs not issued yet never will be


class LifecycleView:
    """What both halves of a connection (Receiver, Sender) read on every packet: the
    Lifecycle and the parts it holds, taken from it once so the packet path reads one
    attribute instead of a chain."""

    __slots__ = ("lifecycle", "is_client", "keys", "phase", "cids", "timers", "close", "spaces", "recovery",
                 "address", "version", "params", "pending")

    def __init__(self, lifecycle: Lifecycle, phase: KeyPhase) -> None:
        self.lifecycle = lifecycle
        self.is_client = lifecycle.is_client
        self.keys = lifecycle.keys
        self.phase = phase
        self.cids = lifecycle.cids
        self.timers = lifecycle.timers
        self.close = lifecycle.close
        self.spaces = lifecycle.spaces.by_id
        self.recovery = lifecycle.spaces.recovery
        self.address = lifecycle.address
        self.version = lifecycle.version
        self.params = lifecycle.params
        self.pending = lifecycle.pending
