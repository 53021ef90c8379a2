"""SimConnection: one QUIC connection as the kernel's IPPROTO_QUIC socket sees it (spec
§1, §2), implemented over plain UDP datagrams, sans-I/O.

The TLS handshake is not done here: userspace hands CRYPTO bytes per level in and out
(`send_crypto` / `recv_crypto`), installs traffic secrets (`install_secret`) and exchanges
the transport-parameter blobs, exactly through the calls the kernel offers. Everything
below that is ours: packets (RFC 9000 §17, RFC 9001, RFC 9369), frames, ACKs and loss
recovery (RFC 9002, simplified), streams and flow control, connection IDs, idle timeout.

No sockets, threads or clocks: time comes in as `now` (seconds), datagrams go out through
`datagrams_to_send(now)`, and `get_timer()` / `handle_timer(now)` drive the timers.
The receiving half lives in receiver.py, the sending half in sender.py (mixins over the
state set up here).

Address validation is: a client follows a Retry (RFC 9000 §17.2.5.2) and keeps the
token of a NEW_TOKEN frame; a server connection starts validated when its Initial carried
a valid token (the endpoint checks it, endpoint.py) and issues a NEW_TOKEN at completion.
Not simulated: Version Negotiation packets (compatible version negotiation of
RFC 9368 between v1 and v2 is), path migration and preferred_address, PLPMTUD (datagrams
are 1200 bytes), disable_1rtt_encryption, events (the socket layer's business), ECN.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from ...quic.errors import QuicError, QuicErrorCode
from ...quic.packet_protection import CIPHERS, PacketKey, initial_keys
from ...quic.versions import QUIC_V1, SUPPORTED_VERSIONS, QuicVersion
from . import frames as fr
from . import tparams
from .crypto_stream import CryptoStreams
from .errors import SimError, sim_error
from .levels import APP, EARLY, HANDSHAKE, INITIAL
from .listener_peek import ClientHelloRejected, packet_dcid, parse_initial_header, peek_client_hello_alpn
from .receiver import Receiver
from .recovery import MAX_DATAGRAM, PacketSpace, Recovery
from .sender import Sender
from .small_queue import SmallQueue
from .state import ConnState
from .streams import StreamManager

__all__ = [
    "SimConnection",
    "SimError",
    "ClientHelloRejected",
    "parse_initial_header",
    "peek_client_hello_alpn",
    "packet_dcid",
]

CONFIG_DEFAULTS = {
    "version": 0,
    "plpmtud_probe_interval": 0,
    "initial_smoothed_rtt": 333_000,
    "payload_cipher_type": 0,
    "congestion_control_algo": 0,
    "validate_peer_address": 0,
    "stream_data_nodelay": 0,
    "receive_session_ticket": 0,
    "certificate_request": 0,
    "keepalive_probe_interval": 0,
}
# Shared by every connection that changes nothing of them (read-only: a connection
# replaces these mappings, never writes into them); a half-open connection has no copies.
_DEFAULT_CONFIG: Mapping[str, int] = MappingProxyType(dict(CONFIG_DEFAULTS))
_DEFAULT_LOCAL: Mapping[str, int] = MappingProxyType(dict(tparams.LOCAL_DEFAULTS))
_ZERO_PARAMS: Mapping[str, int] = MappingProxyType(dict(tparams.ZERO))
_PEER_DEFAULTS: Mapping[str, int] = MappingProxyType(dict(tparams.PEER_DEFAULTS))
CONN_ID_LIMIT = 8  # QUIC_CONN_ID_LIMIT
# The NEW_CONNECTION_IDs of the completion step are issued in idle time (idle_work): while
# the socket waits, or by the endpoint's reactor; at the latest this long after completion
# (a timer), so they never hold up the datagram carrying the client's Finished. RFC 9000
# §5.1.1 sets no deadline for them.
CID_ISSUE_DELAY = 0.002
TICKET_MAX = 4096


class SimConnection(Receiver, Sender):
    """A QUIC connection driven through the kernel's socket semantics."""

    # What every connection sets, in slots: a listener may hold thousands of half-open
    # ones, and an instance dict of this many entries is 1.8 KiB. The mixins keep a
    # __dict__, so an attribute not listed here still works (it only costs that dict).
    __slots__ = ("_alt_initial_recv", "_app_started", "_buffered", "_bytes_received", "_bytes_sent",
                 "_cids_due", "_close_datagram", "_close_frames", "_close_resend_due",
                 "_close_resends", "_corked", "_crypto", "_crypto_queue", "_datagrams_in",
                 "_datagrams_out", "_discarded", "_handshake_confirmed", "_hold_until",
                 "_idle_deadline", "_idle_restart_on_send", "_idle_timeout", "_initial_cid", "_lag",
                 "_last_send", "_level_cipher", "_local", "_local_cids", "_next_cid_seq",
                 "_next_recv_app", "_now", "_peer", "_peer_cid_seq", "_peer_cids",
                 "_peer_params_set", "_peer_reset_tokens", "_peer_sent_version_info", "_pending",
                 "_phase_first_pn", "_preferred_version", "_prev_recv_app", "_probes", "_qv",
                 "_recovery", "_recv_keys", "_recv_phase", "_remote", "_secret", "_send_keys",
                 "_send_phase", "_server_packet_seen", "_spaces", "_streams", "_ticket",
                 "_ticket_open", "_ticket_ready", "_token_in_flight", "_token_source", "_validated",
                 "_version_followed", "cid_generation", "close_info", "config", "event_mask",
                 "events", "is_client", "local_cid", "original_dcid", "peer_addr", "peer_cid",
                 "retries_followed", "retry_scid", "state", "token", "version")

    def __init__(self, *, is_client: bool, version: int = QUIC_V1.number,
                 local_params: dict[str, int] | None = None, config: dict[str, Any] | None = None,
                 local_cid: bytes | None = None, peer_cid: bytes | None = None,
                 original_dcid: bytes | None = None, token: bytes = b"", now: float,
                 peer_addr: Any = None, initial_keys: tuple[PacketKey, PacketKey] | None = None,
                 initial_dcid: bytes | None = None, retry_scid: bytes | None = None,
                 validated: bool = False, token_source: Callable[[], bytes] | None = None) -> None:
        """Server connections: `original_dcid` is the client's very first DCID (before any
        Retry, for original_destination_connection_id), `initial_dcid` the DCID of the
        Initial that created the connection (its Initial keys and first demultiplexing;
        defaults to original_dcid), `retry_scid` the SCID of the Retry it followed, and
        `validated` whether a valid token proved its address (RFC 9000 §8.1).
        `token_source` mints the NEW_TOKEN token sent at completion."""
        self._now = now
        self.is_client = is_client
        overrides = {k: v for k, v in (config or {}).items() if k in CONFIG_DEFAULTS and v}
        self.config: Mapping[str, Any] = {**CONFIG_DEFAULTS, **overrides} if overrides else _DEFAULT_CONFIG
        version = version or self.config["version"] or QUIC_V1.number
        if version not in SUPPORTED_VERSIONS:
            raise sim_error(errno.EINVAL, f"unsupported QUIC version 0x{version:08x}")
        self.version = version
        self._qv: QuicVersion = SUPPORTED_VERSIONS[version]
        # A client keeps its configured version; a server prefers its own if configured,
        # else stays on the client's chosen one (0: no preference), as the kernel's
        # quic_packet_select_version (seen under QEMU: an unconfigured kernel listener
        # keeps a v2 client in v2).
        self._preferred_version = self.config["version"] or (version if is_client else 0)
        self._local: Mapping[str, int] = _DEFAULT_LOCAL
        if local_params:
            try:
                self._local = tparams.merge_fields(tparams.LOCAL_DEFAULTS, local_params, remote=False)
            except ValueError as exc:
                raise sim_error(errno.EINVAL, f"local transport parameter {exc}") from None
        self._remote: Mapping[str, int] = _ZERO_PARAMS  # what TRANSPORT_PARAM remote=1 reports
        self._peer: Mapping[str, int] = _PEER_DEFAULTS  # effective peer values
        self._peer_params_set = False
        self._peer_sent_version_info = False

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
        self._initial_cid = self.peer_cid if is_client else (initial_dcid or self.original_dcid)
        self.retry_scid = retry_scid  # client: the SCID of the Retry it followed
        self.retries_followed = 0  # client: Retry packets acted on (0 or 1)
        self._token_source = token_source
        self._token_in_flight = False  # server: a NEW_TOKEN not acknowledged yet
        self.event_mask = 0  # QUIC_SOCKOPT_EVENT bits the socket subscribed
        self.events: list[bytes] = []  # event type byte + payload (MSG_QUIC_NOTIFICATION); rare
        # Client: QUIC_SOCKOPT_TOKEN's one buffer, as the kernel's quic_token(): set by the
        # application, replaced by a Retry's token, freed at the 1-RTT receive key, then
        # filled by NEW_TOKEN frames (spec §1.4, §2.4).
        self.token = token
        self.peer_addr = peer_addr
        self.state = ConnState.ESTABLISHING
        self.close_info: tuple[int, int, bytes] | None = None

        self._secret = rand[16:]  # for our stateless reset tokens
        self._send_keys: dict[int, PacketKey] = {}
        self._recv_keys: dict[int, PacketKey] = {}
        self._level_cipher: dict[int, int] = {}
        self._discarded: set[int] = set()
        self._alt_initial_recv: dict[int, PacketKey] = {}
        self._install_initial_keys(initial_keys)
        self._send_phase = False  # 1-RTT key phase bits (RFC 9001 §6)
        self._recv_phase = False
        # First 1-RTT packet number sent in the current phase; None: no key update yet.
        self._phase_first_pn: int | None = None
        self._prev_recv_app: PacketKey | None = None
        self._next_recv_app: PacketKey | None = None

        self._crypto = CryptoStreams()  # by level, made at first use
        self._app_started = is_client  # the application has read handshake data (idle_work)
        self._spaces = {space: PacketSpace() for space in (INITIAL, HANDSHAKE, APP)}
        self._recovery = Recovery(self.config["initial_smoothed_rtt"] / 1e6)
        self._streams = StreamManager(is_client, self._local)
        self._crypto_queue: SmallQueue[list] = SmallQueue()  # [level, chunk, read position]
        self._ticket = bytearray()
        self._ticket_ready = False
        self._ticket_open = True

        self._pending: list[fr.Frame] = []  # connection-level frames for 1-RTT packets
        self._probes: dict[int, int] = {}  # space -> ack-eliciting probe packets owed
        self._buffered: dict[int, list[tuple[bytes, float]]] = {HANDSHAKE: [], EARLY: [], APP: []}
        self._corked = False
        # Handshake data waits for the application: what it would trigger alone (an ACK)
        # waits for the response it will send, so both leave in one datagram as in a stack
        # that runs TLS inline; at the latest at this time (spec kernel-quic-abi §2.3
        # transmit triggers; RFC 9000 §13.2.1).
        self._hold_until: float | None = None
        self._lag = 0.0  # how long the datagram being processed may have waited (receiver.py)
        self._close_frames: list[tuple[int, fr.ConnectionClose]] = []
        self._close_datagram: bytes | None = None
        self._close_resends = 0
        self._close_resend_due = False
        self._handshake_confirmed = False
        self._validated = is_client or validated  # server: address validated (RFC 9000 §8.1)
        self._bytes_received = 0
        self._bytes_sent = 0
        self._idle_timeout = self._local["max_idle_timeout"] / 1e6
        self._idle_deadline: float | None = now + self._idle_timeout if self._idle_timeout else None
        self._idle_restart_on_send = True
        self._last_send = now
        self._server_packet_seen = False  # client: the server's SCID is known
        self._version_followed = False  # client: moved to the server's compatible version

        self._local_cids: dict[int, bytes] = {0: self.local_cid}
        self.cid_generation = 0  # bumped whenever local_cids() changes
        self._next_cid_seq = 1
        self._cids_due: float | None = None  # NEW_CONNECTION_IDs scheduled for idle time
        self._peer_cids: dict[int, tuple[bytes, bytes]] = {0: (self.peer_cid, b"")}
        self._peer_cid_seq = 0
        self._peer_reset_tokens: set[bytes] = set()
        self._datagrams_in: SmallQueue[bytes] = SmallQueue()
        self._datagrams_out: SmallQueue[bytes] = SmallQueue()

    # ==== keys ==================================================================================

    def _install_initial_keys(self, keys: tuple[PacketKey, PacketKey] | None = None) -> None:
        """`keys`: (client, server) already derived for original_dcid in this version."""
        client, server = keys or initial_keys(self._initial_cid, self._qv)
        self._send_keys[INITIAL], self._recv_keys[INITIAL] = (client, server) if self.is_client else (server, client)

    def _change_version(self, version: int) -> None:
        """Compatible version negotiation (RFC 9368 §2.3): new Initial keys, same DCID."""
        if INITIAL in self._recv_keys:
            self._alt_initial_recv[self.version] = self._recv_keys[INITIAL]
        self.version = version
        self._qv = SUPPORTED_VERSIONS[version]
        if INITIAL not in self._discarded:
            self._install_initial_keys()

    def install_secret(self, level: int, send: bool, cipher_type: int, secret: bytes) -> None:
        """CRYPTO_SECRET (spec §1.4, §2.4)."""
        if self.state is not ConnState.ESTABLISHING:
            raise sim_error(errno.EINVAL, "CRYPTO_SECRET outside ESTABLISHING")
        if level not in (APP, HANDSHAKE, EARLY):
            raise sim_error(errno.EINVAL, f"CRYPTO_SECRET at level {level}")
        ctype = self._level_cipher.get(level, cipher_type)
        cipher = CIPHERS.get(ctype)
        if cipher is None:
            raise sim_error(errno.EINVAL, f"cipher type {cipher_type}")
        if len(secret) < cipher.secret_len:
            raise sim_error(errno.EINVAL, f"{cipher.name} needs a {cipher.secret_len}-byte secret")
        # Only the secret is kept here: the keys are derived at first use (a receive key
        # with parked packets at once, by the replay below) or in idle time (idle_work),
        # so a key install costs the datagrams about to leave nothing.
        key = PacketKey(cipher, bytes(secret[:cipher.secret_len]), self._qv)
        self._level_cipher[level] = ctype
        self._corked = False  # a key install is a transmit trigger
        if send:
            self._send_keys[level] = key
            if level == APP and APP in self._recv_keys:
                self._complete()
            return
        self._recv_keys[level] = key
        if level == APP:
            self._ticket_open = True
            self.token = b""  # freed, so a NEW_TOKEN can be stored (spec §2.4)
        self._replay_buffered(level)  # packets that waited for this key (spec §2.4)
        if self.state is ConnState.CLOSED:
            # As the kernel (spec §9, socket.c's CRYPTO_SECRET handler): the key is in, but
            # a replayed packet closed the connection (a peer that closed right after its
            # Finished), and the setsockopt itself reports it.
            raise sim_error(errno.EPIPE, "a buffered packet closed the connection")
        if level == APP and APP in self._send_keys:
            self._complete()

    def idle_work(self) -> bool:
        """Work kept off the path of the datagrams: derive the installed keys, issue the
        NEW_CONNECTION_IDs completion scheduled. The endpoint calls this in idle time (before
        it blocks waiting for the peer, after the flush that sent what the last socket call
        queued; or from the reactor). True if it queued frames (the caller flushes them).

        A server connection nobody has read from yet (waiting in the listener's backlog)
        keeps only its keys' secrets instead: it derives a key when a packet needs it and
        drops the cipher contexts again here, as its handshake may never run (each derived
        key holds about 3.5 KiB of them; a flood of Initials leaves hundreds of such
        connections queued, each with a key that opened its Initial and one that sent an
        ACK)."""
        if self._app_started:
            self.derive_keys()
        else:
            for keys in (self._send_keys, self._recv_keys):
                for key in keys.values():
                    key.forget_derived()
        return self._issue_scheduled_cids()

    def derive_keys(self) -> None:
        """Derive every installed key not derived yet (RFC 9001 §5.1; PacketKey.derive):
        after the flush that sent what the keys' install triggered, and before the answer
        that needs them."""
        for keys in (self._send_keys, self._recv_keys):
            for key in keys.values():
                key.derive()

    def _complete(self) -> None:
        """Both 1-RTT keys are in: the kernel's completion step (spec §2.4). Its
        NEW_CONNECTION_IDs are only scheduled (CID_ISSUE_DELAY)."""
        self.state = ConnState.ESTABLISHED
        if not self.is_client:
            self._hold_until = None  # HANDSHAKE_DONE leaves now (a client's Finished follows)
            self._handshake_confirmed = True
            self._discard_level(HANDSHAKE)  # all Handshake packets count as acknowledged
            self._queue_new_token()
            self._pending.append(fr.HandshakeDone())
        self._cids_due = self._now + CID_ISSUE_DELAY

    def _discard_level(self, level: int) -> None:
        if level in self._discarded:
            return
        self._discarded.add(level)
        self._send_keys.pop(level, None)
        self._recv_keys.pop(level, None)
        if level == INITIAL:
            self._alt_initial_recv.clear()
        self._buffered.pop(level, None)
        self._recovery.forget(self._spaces[level].discard())
        self._crypto[level].send.reset()
        self._probes.pop(level, None)

    def key_update(self) -> None:
        """QUIC_SOCKOPT_KEY_UPDATE: start a key update (RFC 9001 §6.1)."""
        if self.state is not ConnState.ESTABLISHED:
            raise sim_error(errno.EPIPE, "key update outside ESTABLISHED")
        if not self._handshake_confirmed or APP not in self._send_keys or self._key_update_pending():
            raise sim_error(errno.EINVAL, "a key update is still pending")
        self._send_keys[APP] = self._send_keys[APP].next_phase()
        self._send_phase = not self._send_phase
        self._phase_first_pn = self._spaces[APP].next_pn

    def _key_update_pending(self) -> bool:
        """RFC 9001 §6.1: the peer has not answered the last update yet, or no packet of
        the current phase was acknowledged: only a subsequent update waits for that ACK, the
        first one (no 1-RTT packet of ours need have been sent yet) does not."""
        if self._send_phase != self._recv_phase:
            return True
        first = self._phase_first_pn
        if first is None:
            return False
        largest_acked = self._spaces[APP].largest_acked
        return largest_acked is None or largest_acked < first

    @property
    def key_phase(self) -> int:
        return int(self._send_phase)

    @property
    def handshake_confirmed(self) -> bool:
        return self._handshake_confirmed

    # ==== handshake data path (spec §2.2, §2.3) =================================================

    def send_crypto(self, level: int, data: bytes, more: bool = False) -> None:
        if self.state is ConnState.CLOSED:
            raise sim_error(errno.EPIPE, "handshake send on a closed connection")
        if level not in (APP, INITIAL, HANDSHAKE):
            raise sim_error(errno.EINVAL, f"handshake send at level {level}")
        if level not in self._send_keys:
            raise sim_error(errno.EINVAL, f"no send key at level {level}")
        if not data:
            raise sim_error(errno.EMSGSIZE, "empty handshake send")
        self._crypto[level].send.write(bytes(data))
        self._corked = more
        self._hold_until = None  # the response: held ACKs and frames go with it

    def recv_crypto(self, max_len: int) -> tuple[int, bytes, bool] | None:
        self._app_started = True
        if not self._crypto_queue:
            return None
        entry = self._crypto_queue[0]
        level, chunk, pos = entry
        end = min(len(chunk), pos + max(0, max_len))
        data = chunk[pos:end]
        if end >= len(chunk):
            self._crypto_queue.popleft()
            return level, data, True
        entry[2] = end
        return level, data, False

    def session_ticket(self) -> bytes:
        return bytes(self._ticket) if self._ticket_ready else b""

    def replace_ticket(self, blob: bytes) -> None:
        self._ticket = bytearray(blob)
        self._ticket_open = False

    def _capture_ticket(self, chunk: bytes) -> None:
        """Client side of spec §2.6: the first NewSessionTicket, from APP CRYPTO offset 0."""
        if self._ticket_ready or not self._ticket_open:
            return
        if len(self._ticket) + len(chunk) > TICKET_MAX:
            self._ticket_open = False
            return
        self._ticket += chunk
        if len(self._ticket) >= 4 and len(self._ticket) >= 4 + int.from_bytes(self._ticket[1:4], "big"):
            self._ticket_ready = True

    # ==== transport parameters (spec §1.4, §5) ==================================================

    def local_transport_params_blob(self) -> bytes:
        if self.state is not ConnState.ESTABLISHING:
            raise sim_error(errno.EINVAL, "TRANSPORT_PARAM_EXT outside ESTABLISHING")
        needs_token = tparams.needs_reset_token(self._local, is_client=self.is_client)
        return tparams.build_local_blob(
            self._local, is_client=self.is_client, local_cid=self.local_cid,
            original_dcid=self.original_dcid, version=self.version,
            peer_sent_version_info=self._peer_sent_version_info, retry_scid=self.retry_scid,
            reset_token=self._reset_token(self.local_cid) if needs_token else None)

    def set_peer_transport_params_blob(self, blob: bytes) -> None:
        if self.state is not ConnState.ESTABLISHING:
            raise sim_error(errno.EINVAL, "TRANSPORT_PARAM_EXT outside ESTABLISHING")
        if len(blob) > tparams.MAX_BLOB:
            raise sim_error(errno.EINVAL, "TRANSPORT_PARAM_EXT over 512 bytes")
        try:
            peer = tparams.parse_peer_blob(bytes(blob), we_are_client=self.is_client,
                                           original_dcid=self.original_dcid, peer_cid=self.peer_cid,
                                           retry_scid=self.retry_scid)
            self._negotiate_version(peer)
        except QuicError as exc:
            self._close_locally(exc.error_code, 0, exc.reason.encode()[:63])
            code = errno.EPROTONOSUPPORT if exc.error_code == QuicErrorCode.VERSION_NEGOTIATION_ERROR else errno.EINVAL
            raise sim_error(code, f"peer transport parameters: {exc}") from None
        self._remote = dict(peer.fields)
        self._peer_params_set = True
        self._peer_sent_version_info = peer.version_information is not None
        if peer.stateless_reset_token is not None:
            self._peer_reset_tokens.add(peer.stateless_reset_token)
            self._peer_cids[0] = (self.peer_cid, peer.stateless_reset_token)
        self._apply_peer_params()

    def _negotiate_version(self, peer: tparams.PeerParams) -> None:
        vi = peer.version_information
        if vi is None:
            return
        if self.is_client:
            if vi.chosen_version != self.version:  # RFC 9368 §4
                raise QuicError(QuicErrorCode.VERSION_NEGOTIATION_ERROR, "server's chosen version is not in use")
            if vi.available_versions:
                tparams.select_version(vi.available_versions, is_server=False, current=self.version,
                                       preferred=self._preferred_version)
            return
        chosen = tparams.select_version(vi.available_versions, is_server=True, current=self.version,
                                        preferred=self._preferred_version)
        if chosen != self.version:
            self._change_version(chosen)

    def _apply_peer_params(self) -> None:
        peer = {**tparams.PEER_DEFAULTS, **{k: v for k, v in self._remote.items() if v}}
        if not self._remote["disable_compatible_version"] and self._peer_params_set:
            peer["disable_compatible_version"] = 0
        self._peer = peer
        self._streams.apply_peer_params(peer)
        self._update_idle_timeout()

    def _update_idle_timeout(self) -> None:
        mine, theirs = self._local["max_idle_timeout"], self._remote["max_idle_timeout"]
        values = [v for v in (mine, theirs if self._peer_params_set else 0) if v]
        self._idle_timeout = min(values) / 1e6 if values else 0.0
        self._idle_deadline = self._now + self._idle_timeout if self._idle_timeout else None

    def get_transport_param(self, remote: bool) -> dict[str, int]:
        return dict(self._remote if remote else self._local)

    def set_transport_param(self, fields: dict[str, int], remote: bool) -> None:
        if self.state is ConnState.ESTABLISHED or (remote and self.state is not ConnState.ESTABLISHING):
            raise sim_error(errno.EINVAL, "TRANSPORT_PARAM after the handshake")
        try:
            merged = tparams.merge_fields(self._remote if remote else self._local, fields, remote)
        except ValueError as exc:
            raise sim_error(errno.EINVAL, f"transport parameter {exc}") from None
        if remote:
            self._remote = merged
            self._apply_peer_params()
        else:
            self._local = merged
            self._streams.apply_local_params(merged)
            self._update_idle_timeout()

    # ==== streams and datagrams ==================================================================

    def _stream_limit_errno(self) -> int:
        # Before the 1-RTT keys an over-limit open fails with EINVAL, later with EAGAIN.
        return errno.EAGAIN if self.state is ConnState.ESTABLISHED else errno.EINVAL

    def open_stream(self, uni: bool) -> int:
        if self.state is ConnState.CLOSED:
            raise sim_error(errno.EPIPE, "stream open on a closed connection")
        return self._streams.open_local(uni, self._stream_limit_errno())

    def stream_send(self, stream_id: int, data: bytes, fin: bool = False) -> int:
        """Queue stream data; returns how much the flow-control credit let in (EAGAIN if
        none of a non-empty send)."""
        if self.state is ConnState.CLOSED:
            raise sim_error(errno.EPIPE, "stream send on a closed connection")
        if not data and not fin:
            raise sim_error(errno.EINVAL, "empty stream send without FIN")
        stream = self._streams.stream_for_send(stream_id, self._stream_limit_errno())
        if stream.send is None or stream.send.fin or stream.reset_pending is not None:
            raise sim_error(errno.EINVAL, f"stream {stream_id} is finished for sending")
        sent = self._streams.write(stream, bytes(data), fin)
        self._corked = False
        return sent

    def stream_reset(self, stream_id: int, errcode: int) -> None:
        """QUIC_SOCKOPT_STREAM_RESET: abandon sending, RESET_STREAM to the peer."""
        if self.state is not ConnState.ESTABLISHED:
            raise sim_error(errno.EINVAL, "stream reset outside ESTABLISHED")
        self._streams.reset(stream_id, errcode)
        self._corked = False

    def stream_stop_sending(self, stream_id: int, errcode: int) -> None:
        """QUIC_SOCKOPT_STREAM_STOP_SENDING: ask the peer to stop sending on a stream."""
        if self.state is not ConnState.ESTABLISHED:
            raise sim_error(errno.EINVAL, "stop sending outside ESTABLISHED")
        self._streams.stop_sending(stream_id, errcode)
        self._corked = False

    def stream_recv(self, max_len: int) -> tuple[int, bytes, bool] | None:
        # 0-RTT data waits on the "early list" until the 1-RTT receive key (spec §2.6).
        if APP not in self._recv_keys and APP not in self._discarded:
            return None
        return self._streams.read(max_len)

    def datagram_send(self, data: bytes) -> None:
        """RFC 9221 DATAGRAM (MSG_QUIC_DATAGRAM)."""
        if self.state is ConnState.CLOSED:
            raise sim_error(errno.EPIPE, "datagram send on a closed connection")
        limit = self._peer["max_datagram_frame_size"]
        if not limit:
            raise sim_error(errno.EINVAL, "the peer does not accept DATAGRAM frames")
        if not data or len(data) + 3 > min(limit, MAX_DATAGRAM - 64):
            raise sim_error(errno.EMSGSIZE, "datagram empty or too large")
        self._datagrams_out.append(bytes(data))
        self._corked = False

    def datagram_recv(self) -> bytes | None:
        return self._datagrams_in.popleft() if self._datagrams_in else None

    def has_item(self) -> bool:
        """A recvmsg would return at once: handshake data, readable stream data, or the
        ENOTCONN of a closed connection."""
        return (bool(self._crypto_queue) or self.state is ConnState.CLOSED or bool(self.events)
                or ((APP in self._recv_keys or APP in self._discarded) and self._streams.readable()))

    def pending_readable(self) -> bool:
        return (bool(self._crypto_queue) or self.state is ConnState.CLOSED or bool(self._datagrams_in) or bool(self.events)
                or (APP in self._recv_keys and self._streams.readable()))

    # ==== connection IDs ==========================================================================

    def local_cids(self) -> list[bytes]:
        """Every CID the peer may address us with (the endpoint demultiplexes on them)."""
        cids = list(self._local_cids.values())
        if not self.is_client and self._initial_cid not in cids:
            cids.append(self._initial_cid)
        return cids

    def _reset_token(self, cid: bytes) -> bytes:
        return hmac.digest(self._secret, b"stateless_reset" + cid, hashlib.sha256)[:16]

    # ==== address validation (RFC 9000 §8.1) =======================================================

    def _queue_new_token(self) -> bool:
        """A NEW_TOKEN frame (§19.7) for the client's next connection; False without a
        token source (a connection made outside an endpoint)."""
        if self._token_source is None:
            return False
        self._pending.append(fr.NewToken(self._token_source()))
        self._token_in_flight = True
        return True

    def send_new_token(self) -> None:
        """Server QUIC_SOCKOPT_TOKEN set (spec §1.4): EINVAL unless ESTABLISHED, EAGAIN
        while the last NEW_TOKEN is unacknowledged."""
        if self.is_client or self.state is not ConnState.ESTABLISHED:
            raise sim_error(errno.EINVAL, "NEW_TOKEN outside ESTABLISHED")
        if self._token_in_flight:
            raise sim_error(errno.EAGAIN, "a NEW_TOKEN is in flight")
        if not self._queue_new_token():
            raise sim_error(errno.EINVAL, "no token source")
        self._corked = False

    def set_token(self, token: bytes) -> None:
        """Client QUIC_SOCKOPT_TOKEN set: the token of the next Initial packets."""
        self.token = bytes(token)

    def follow_retry(self, scid: bytes, token: bytes) -> None:
        """A valid Retry (RFC 9000 §17.2.5.2; the receiver checked it): the next Initial
        goes to the Retry's SCID with its token, under Initial keys from that SCID (RFC
        9001 §5.2), carrying the same ClientHello CRYPTO data; packet numbers go on
        (§17.2.5.3), the Initials sent so far leave the flight (RFC 9002 §6.3)."""
        self.retries_followed += 1
        self.retry_scid = scid
        self.token = token
        self.peer_cid = scid
        self._peer_cids[0] = (scid, b"")
        self._initial_cid = scid
        self._install_initial_keys()
        self._recovery.forget(self._spaces[INITIAL].abandon_sent())
        self._crypto[INITIAL].send.retransmit_all()
        self._probes.pop(INITIAL, None)
        self._corked = False

    def _push_event(self, event_type: int, payload: bytes) -> None:
        """An event for recvmsg (MSG_QUIC_NOTIFICATION), if the socket subscribed it."""
        if self.event_mask & (1 << event_type):
            self.events.append(bytes((event_type,)) + payload)

    def _issue_scheduled_cids(self) -> bool:
        """The completion step's NEW_CONNECTION_IDs, if still owed (idle_work, handle_timer;
        owed only while ESTABLISHED: _enter_closed drops them)."""
        if self._cids_due is None:
            return False
        return self._issue_connection_ids()

    def _issue_connection_ids(self) -> bool:
        """Top the peer up to its active_connection_id_limit (RFC 9000 §5.1.1, §18.2; at
        most CONN_ID_LIMIT): new CIDs with their stateless reset tokens (§10.3), queued as
        NEW_CONNECTION_ID frames (§19.15). True if any was queued."""
        self._cids_due = None  # a full set now: nothing left for the scheduled issuance
        limit = min(self._peer["active_connection_id_limit"], CONN_ID_LIMIT)
        count = limit - len(self._local_cids)
        if count <= 0:
            return False
        rand = os.urandom(8 * count)  # one read of the random source for all of them
        for i in range(0, 8 * count, 8):
            cid = rand[i:i + 8]
            seq = self._next_cid_seq
            self._next_cid_seq += 1
            self._local_cids[seq] = cid
            self.cid_generation += 1
            self._pending.append(fr.NewConnectionId(seq, 0, cid, self._reset_token(cid)))
        return True

    # ==== close ===================================================================================

    def close(self, errcode: int | None = 0, phrase: bytes = b"", app: bool = True) -> None:
        """ESTABLISHING: transport CONNECTION_CLOSE (errcode None = 0x0c APPLICATION_ERROR)
        at Initial and Handshake level; ESTABLISHED: 0x1d (or 0x1c if not app) in 1-RTT."""
        if self.state is ConnState.CLOSED:
            return
        phrase = bytes(phrase)[:63]
        if self.state is ConnState.ESTABLISHING:
            code = QuicErrorCode.APPLICATION_ERROR if errcode is None else errcode
            self._close_locally(int(code), 0, phrase)
        else:
            self._close_locally(errcode or 0, 0, phrase, app=app)

    def _close_locally(self, code: int, frame_type: int, phrase: bytes, app: bool = False) -> None:
        self.close_info = (code, frame_type, phrase)
        frames: list[tuple[int, fr.ConnectionClose]] = []
        if self.state is ConnState.ESTABLISHED and APP in self._send_keys:
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
                if level in self._send_keys:
                    frames.append((level, fr.ConnectionClose(int(hs_code), 0 if app else frame_type, phrase)))
        self._close_frames = frames
        self._enter_closed()

    def _enter_closed(self) -> None:
        self.state = ConnState.CLOSED
        self._idle_deadline = None
        self._cids_due = None  # NEW_CONNECTION_IDs not issued yet never will be

    # ==== timers ==================================================================================

    def _loss_or_pto(self) -> tuple[float, int, bool] | None:
        """(when, space, is_loss_timer) of the loss-detection timer."""
        earliest: tuple[float, int, bool] | None = None
        for sid, space in self._spaces.items():
            if space.loss_time is not None and (earliest is None or (space.loss_time, sid) < earliest[:2]):
                earliest = (space.loss_time, sid, True)
        if earliest is not None:
            return earliest
        best: tuple[float, int, bool] | None = None
        for sid, space in self._spaces.items():
            if space.discarded or space.last_ack_eliciting_time is None:
                continue
            if not space.has_ack_eliciting_in_flight():
                continue
            if sid == APP and self.state is not ConnState.ESTABLISHED:
                continue  # RFC 9002 §6.2.1: no 1-RTT PTO before the handshake completes
            max_ack = self._peer["max_ack_delay"] / 1e6 if sid == APP else 0.0
            when = space.last_ack_eliciting_time + self._recovery.pto_interval(max_ack)
            if best is None or when < best[0]:
                best = (when, sid, False)
        if best is None and self.is_client and self.state is ConnState.ESTABLISHING:
            # RFC 9002 §6.2.2.1: keep probing so a server stuck at its amplification
            # limit gets more credit.
            sid = HANDSHAKE if HANDSHAKE in self._send_keys else INITIAL
            if sid in self._send_keys:
                best = (self._last_send + self._recovery.pto_interval(0.0), sid, False)
        return best

    def get_timer(self) -> float | None:
        """The earliest of the idle, hold, CID issuance, loss/PTO and ACK timers (called
        after every socket call: no allocations beyond the loss timer's tuple)."""
        if self.state is ConnState.CLOSED:
            return None
        best = self._idle_deadline
        cids = self._cids_due
        if cids is not None and (best is None or cids < best):
            best = cids
        hold = self._hold_until
        if hold is not None and (best is None or hold < best):
            best = hold
        loss = self._loss_or_pto()
        if loss is not None and (best is None or loss[0] < best):
            best = loss[0]
        for space in self._spaces.values():
            due = space.ack_deadline
            if due is None or space.discarded:
                continue
            if hold is not None and due < hold:
                due = hold  # held ACKs are due when the hold ends
            if best is None or due < best:
                best = due
        return best

    def handle_timer(self, now: float) -> None:
        self._now = now
        if self.state is ConnState.CLOSED:
            return
        if self._hold_until is not None and now >= self._hold_until:
            self._hold_until = None
        if self._idle_deadline is not None and now >= self._idle_deadline:
            if self.close_info is None:
                self.close_info = (0, 0, b"")  # idle timeout: an all-zero close (spec §1.5)
            self._enter_closed()
            return
        if self._cids_due is not None and now >= self._cids_due:
            self._issue_scheduled_cids()  # nobody had idle time for them: now
        self._corked = False
        loss = self._loss_or_pto()
        if loss is None or loss[0] > now:
            return
        _, sid, is_loss = loss
        if is_loss:
            self._on_packets_lost(self._recovery.detect_lost(self._spaces[sid], now))
            return
        self._recovery.pto_count += 1
        if sid not in self._discarded:
            self._crypto[sid].send.retransmit_all()
        if sid == APP:
            self._streams.retransmit_all()
        self._probes[sid] = 2 if self._spaces[sid].has_ack_eliciting_in_flight() else 1
        self._last_send = now
