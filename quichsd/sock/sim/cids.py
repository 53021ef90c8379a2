"""The connection IDs of one connection (RFC 9000 §5.1): ours, which the peer addresses us
with (the endpoint demultiplexes on them), and the peer's, with the stateless reset tokens
of both sides (§10.3)."""
from __future__ import annotations

import errno
import hashlib
import hmac
import os

from ...quic.errors import QuicError, QuicErrorCode
from . import frames as fr
from .errors import sim_error

__all__ = ["ConnectionIds", "CONN_ID_LIMIT", "reset_token", "stateless_reset"]

CONN_ID_LIMIT = 8  # QUIC_CONN_ID_LIMIT
TOKEN_LEN = 16
# What the kernel sends and answers (net/quic/packet.c): a reset is at most 64 bytes and one
# byte shorter than the packet that triggered it; none for a trigger of 22 bytes or less
# (header byte, 5 unpredictable bytes, token), so two endpoints can never keep one going
# (RFC 9000 §10.3.3).
RESET_MAX_LEN = 64
RESET_MIN_LEN = 1 + 5 + TOKEN_LEN


def reset_token(key: bytes, cid: bytes) -> bytes:
    """The stateless reset token of `cid` under `key` (RFC 9000 §10.3.2: a keyed hash of the
    connection ID, so a static key gives the same token after the connection is gone)."""
    return hmac.digest(key, b"stateless_reset" + cid, hashlib.sha256)[:TOKEN_LEN]


def stateless_reset(datagram: bytes, key: bytes, cid_len: int) -> bytes | None:
    """The Stateless Reset (RFC 9000 §10.3) answering a 1-RTT packet for no connection: a
    short header with the fixed bit, unpredictable bytes, the token of the packet's DCID;
    None when the trigger is too short to answer (see RESET_MIN_LEN)."""
    if len(datagram) <= RESET_MIN_LEN or len(datagram) < 1 + cid_len or datagram[0] & 0x80:
        return None
    size = min(RESET_MAX_LEN, len(datagram) - 1)
    body = os.urandom(size - TOKEN_LEN)
    return bytes((0x40 | (body[0] & 0x3F),)) + body[1:] + reset_token(key, datagram[1:1 + cid_len])


class ConnectionIds:
    __slots__ = ("is_client", "local_cid", "peer_cid", "original_dcid", "initial_cid", "retry_scid",
                 "local", "generation", "next_seq", "due", "peer", "peer_seq", "peer_reset_tokens",
                 "server_scid_seen", "_secret", "alt_seq", "local_active_seq")

    def __init__(self, *, is_client: bool, local_cid: bytes | None, peer_cid: bytes | None,
                 original_dcid: bytes | None, initial_dcid: bytes | None, retry_scid: bytes | None) -> None:
        """See SimConnection for the arguments; a client picks what it is not given."""
        self.is_client = is_client
        # One read of the random source for both CIDs a client may pick and our secret.
        rand = os.urandom(48)
        self.local_cid = local_cid or rand[:8]
        if is_client:
            self.peer_cid = peer_cid or rand[8:16]
            self.original_dcid = self.peer_cid
        else:
            if peer_cid is None or original_dcid is None:
                raise sim_error(errno.EINVAL, "a server connection needs peer_cid and original_dcid")
            self.peer_cid = peer_cid
            self.original_dcid = original_dcid
        # The DCID the Initial keys come from (RFC 9001 §5.2): the first one, or a Retry's SCID.
        self.initial_cid = self.peer_cid if is_client else (initial_dcid or self.original_dcid)
        self.retry_scid = retry_scid  # client: the SCID of the Retry it followed
        self._secret = rand[16:]  # for our stateless reset tokens
        self.local: dict[int, bytes] = {0: self.local_cid}  # ours by sequence number
        self.generation = 0  # bumped whenever all_local() changes
        self.next_seq = 1
        self.due: float | None = None  # NEW_CONNECTION_IDs scheduled for idle time
        self.peer: dict[int, tuple[bytes, bytes]] = {0: (self.peer_cid, b"")}  # seq -> (cid, reset token)
        self.peer_seq = 0  # the sequence number of peer_cid
        self.peer_reset_tokens: set[bytes] = set()
        self.server_scid_seen = False  # client: the server's first packet set peer_cid (§7.2)
        self.alt_seq: int | None = None  # the peer's CID chosen for a path being validated
        self.local_active_seq = 0  # ours that the peer uses on the validated path

    def all_local(self) -> list[bytes]:
        """Every CID the peer may address us with."""
        cids = list(self.local.values())
        if not self.is_client and self.initial_cid not in cids:
            cids.append(self.initial_cid)
        return cids

    def reset_token(self, cid: bytes) -> bytes:
        return reset_token(self._secret, cid)

    def use_reset_key(self, key: bytes) -> None:
        """Derive our tokens from the endpoint's static key (a server connection), as the
        kernel derives them from its listener's secret: the endpoint can then reset
        connections it no longer has (stateless_reset above)."""
        self._secret = key

    def issue(self, peer_limit: int) -> list[fr.NewConnectionId]:
        """Top the peer up to its active_connection_id_limit (§5.1.1, §18.2; at most
        CONN_ID_LIMIT): new CIDs with their stateless reset tokens (§10.3), as frames
        (§19.15). Nothing is due for the scheduled issuance after this."""
        self.due = None
        count = min(peer_limit, CONN_ID_LIMIT) - len(self.local)
        if count <= 0:
            return []
        frames = []
        rand = os.urandom(8 * count)  # one read of the random source for all of them
        for i in range(0, 8 * count, 8):
            cid = rand[i:i + 8]
            seq = self.next_seq
            self.next_seq += 1
            self.local[seq] = cid
            self.generation += 1
            frames.append(fr.NewConnectionId(seq, 0, cid, self.reset_token(cid)))
        return frames

    def follow_retry(self, scid: bytes) -> None:
        """The Initial after a Retry goes to its SCID, under Initial keys from it (RFC 9001 §5.2)."""
        self.retry_scid = scid
        self.peer_cid = scid
        self.peer[0] = (scid, b"")
        self.initial_cid = scid

    def learn_server_scid(self, scid: bytes) -> None:
        """Client: the server's first packet names the CID to use from now on (§7.2)."""
        self.server_scid_seen = True
        self.peer_cid = scid
        self.peer[0] = (scid, b"")

    def set_peer_reset_token(self, token: bytes) -> None:
        """The server's stateless_reset_token transport parameter (§18.2): the token of its
        first CID."""
        self.peer_reset_tokens.add(token)
        self.peer[0] = (self.peer_cid, token)

    def on_new_connection_id(self, f: fr.NewConnectionId, limit: int) -> list[fr.RetireConnectionId]:
        """§19.15: store the peer's new CID, retire those before retire_prior_to (the frames
        to send back); CONNECTION_ID_LIMIT_ERROR over our active_connection_id_limit."""
        if f.sequence in self.peer or f.sequence < self.peer_seq:
            return []
        retire = [fr.RetireConnectionId(seq) for seq in self.peer if seq < f.retire_prior_to]
        for frame in retire:
            del self.peer[frame.sequence]
        if f.sequence >= f.retire_prior_to:
            self.peer[f.sequence] = (f.cid, f.reset_token)
            self.peer_reset_tokens.add(f.reset_token)
        if len(self.peer) > limit:
            raise QuicError(QuicErrorCode.CONNECTION_ID_LIMIT_ERROR, "too many connection IDs", 0x18)
        if self.peer_seq not in self.peer and self.peer:
            self.peer_seq = min(self.peer)
            self.peer_cid = self.peer[self.peer_seq][0]
        return retire

    def on_retire(self, seq: int) -> None:
        """§19.16: the peer retires one of ours; PROTOCOL_VIOLATION for one never issued."""
        if seq >= self.next_seq:
            raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "retiring a CID never issued", 0x19)
        cid = self.local.pop(seq, None)
        if cid is None:
            return
        self.generation += 1
        if cid == self.local_cid and self.local:
            self.local_cid = self.local[min(self.local)]

    # ---- migration (RFC 9000 §9.5; path.py, migration.py) --------------------------------------

    def local_seq(self, cid: bytes) -> int | None:
        """The sequence number of our CID `cid` (None: not one of ours any more)."""
        for seq, mine in self.local.items():
            if mine == cid:
                return seq
        return None

    def select_alt(self, same_cid: bool) -> bool:
        """Choose the peer's CID for a new path (connid.h quic_conn_id_select_alt): the one
        in use if the peer kept ours (a NAT rebinding, §9.5 allows it) or if it is the only
        one, else the next one; False if none is left (the caller asks for one)."""
        if self.alt_seq is not None:
            return True
        later = [seq for seq in self.peer if seq > self.peer_seq]
        if same_cid or (not later and self.peer_seq == min(self.peer)):
            self.alt_seq = self.peer_seq
        elif later:
            self.alt_seq = min(later)
        return self.alt_seq is not None

    def alt_cid(self) -> bytes:
        """The destination CID of the path being validated."""
        seq = self.peer_seq if self.alt_seq is None or self.alt_seq not in self.peer else self.alt_seq
        return self.peer[seq][0]

    def retire_oldest(self) -> fr.RetireConnectionId:
        """No CID left for a new path: retire the oldest, so the peer issues another (as
        outqueue.c quic_outq_probe_path_alt; select_alt returned False, so it is not the
        one in use)."""
        seq = min(self.peer)
        del self.peer[seq]
        return fr.RetireConnectionId(seq)

    def switch_to_alt(self, local_seq: int | None) -> None:
        """The new path is validated: use its CID from now on (§9.5); `local_seq`: ours
        that the peer used there."""
        seq = self.alt_seq
        self.alt_seq = None
        if seq is not None and seq in self.peer:
            self.peer_seq = seq
            self.peer_cid = self.peer[seq][0]
        if local_seq is not None:
            self.local_active_seq = local_seq

    def preferred_address_cid(self) -> tuple[bytes, bytes]:
        """Server: the CID of sequence number 1 and its token, for preferred_address
        (§18.2; the kernel makes seq 1 for it, frame.c quic_frame_build_transport_params_ext)."""
        cid = self.local.get(1)
        if cid is None:
            cid = os.urandom(8)
            self.local[1] = cid
            self.next_seq = max(self.next_seq, 2)
            self.generation += 1
        return cid, self.reset_token(cid)

    def add_preferred_peer_cid(self, cid: bytes, token: bytes) -> None:
        """Client: the server's preferred_address CID is its sequence number 1 (§5.1.1)."""
        self.peer[1] = (cid, token)
        self.peer_reset_tokens.add(token)
