"""SimConnection: one QUIC connection as the kernel's IPPROTO_QUIC socket sees it (spec
§1, §2), implemented over plain UDP datagrams, sans-I/O.

The TLS handshake is not done here: userspace hands CRYPTO bytes per level in and out
(`send_crypto` / `recv_crypto`), installs traffic secrets (`install_secret`) and exchanges
the transport-parameter blobs, exactly through the calls the kernel offers. Everything
below that is ours: packets (RFC 9000 §17, RFC 9001, RFC 9369), frames, ACKs and loss
recovery (RFC 9002, simplified), streams and flow control, connection IDs, idle timeout.

No sockets, threads or clocks: time comes in as `now` (seconds), datagrams go out through
`datagrams_to_send(now)`, and `get_timer()` / `handle_timer(now)` drive the timers.

The connection is composed of parts, each owning its state: keys per level and the key
phase (keys.py), connection IDs (cids.py), timers (timers.py), packet number spaces and
loss recovery (spaces.py), address validation (address.py), transport parameters
(params.py), the version (version_choice.py), CRYPTO data and the ticket
(handshake_data.py), streams (streams.py), DATAGRAM frames (datagrams.py), events
(notifications.py) and the close (close.py). lifecycle.py holds the state (state.py) and
the steps that change several parts at once; receiver.py and sender.py are the two
halves of the wire. This class is the socket's side: the calls the kernel offers.

Address validation is: a client follows a Retry (RFC 9000 §17.2.5.2) and keeps the
token of a NEW_TOKEN frame; a server connection starts validated when its Initial carried
a valid token (the endpoint checks it, endpoint.py) and issues a NEW_TOKEN at completion.
Connection migration (a peer's move, active migration, preferred_address): path.py and
migration.py. Not simulated: disable_1rtt_encryption, ECN.
"""
from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...quic.errors import QuicError, QuicErrorCode
from ...quic.packet_protection import PacketKey
from ...quic.transport_params import PreferredAddress
from ...quic.versions import QUIC_V1
from . import frames as fr
from . import migration, tparams
from .address import AddressValidation
from .cids import CONN_ID_LIMIT, ConnectionIds
from .close import CloseState
from .datagrams import DatagramQueues
from .delivery import Delivery
from .errors import SimError, sim_error
from .handshake_data import TICKET_MAX, HandshakeData, TicketCapture
from .keys import KeyPhase, LevelKeys
from .levels import APP, HANDSHAKE, INITIAL
from .lifecycle import CID_ISSUE_DELAY, Lifecycle
from .listener_peek import (
    ClientHelloRejected,
    OpenedInitial,
    packet_dcid,
    parse_initial_header,
    peek_client_hello_alpn,
)
from .notifications import Notifications
from .params import TransportParams
from .pmtud import PmtuProbing
from .receiver import Receiver
from .sender import Sender
from .spaces import LossTimer, PacketSpaces
from .state import ConnState
from .streams import StreamManager
from .timers import Timers
from .version_choice import VersionChoice, describe_versions

if TYPE_CHECKING:
    from .rewrite import SendRewriter

__all__ = [
    "SimConnection",
    "SimError",
    "ClientHelloRejected",
    "parse_initial_header",
    "peek_client_hello_alpn",
    "packet_dcid",
    "CID_ISSUE_DELAY",
    "CONN_ID_LIMIT",
    "TICKET_MAX",
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

_ESTABLISHING, _ESTABLISHED, _CLOSED = ConnState.ESTABLISHING, ConnState.ESTABLISHED, ConnState.CLOSED


class SimConnection:
    """A QUIC connection driven through the kernel's socket semantics."""

    # Slots: a listener may hold thousands of half-open connections.
    __slots__ = ("is_client", "lifecycle", "keys", "phase", "cids", "timers", "closing", "spaces", "address",
                 "version_choice", "params", "handshake", "ticket", "streams", "datagrams", "notifications",
                 "delivery", "receiver", "sender")

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
        `token_source` mints the NEW_TOKEN token sent at completion. `config`: the
        QUIC_SOCKOPT_CONFIG fields (CONFIG_DEFAULTS) that matter here."""
        self.is_client = is_client
        overrides = {k: v for k, v in config.items() if k in CONFIG_DEFAULTS and v} if config else None
        settings = {**CONFIG_DEFAULTS, **overrides} if overrides else CONFIG_DEFAULTS
        self.version_choice = VersionChoice(version or settings["version"] or QUIC_V1.number,
                                            configured=settings["version"], is_client=is_client)
        self.params = TransportParams(local_params)
        self.cids = ConnectionIds(is_client=is_client, local_cid=local_cid, peer_cid=peer_cid,
                                  original_dcid=original_dcid, initial_dcid=initial_dcid,
                                  retry_scid=retry_scid)
        self.address = AddressValidation(is_client=is_client, validated=validated, token=token,
                                         peer_addr=peer_addr, token_source=token_source)
        self.keys = LevelKeys()
        self.phase = KeyPhase(self.keys)
        self.timers = Timers(now, self.params.idle_timeout())
        self.closing = CloseState()
        self.spaces = PacketSpaces(settings["initial_smoothed_rtt"] / 1e6,
                                   settings["congestion_control_algo"], is_client=is_client)
        self.handshake = HandshakeData(app_started=is_client)
        self.ticket = TicketCapture()
        self.streams = StreamManager(is_client, self.params.local)
        self.datagrams = DatagramQueues()
        self.notifications = Notifications()
        self.phase.notifications = self.notifications  # the peer's key updates (KEY_UPDATE events)
        self.lifecycle = Lifecycle(is_client=is_client, keys=self.keys, spaces=self.spaces,
                              crypto=self.handshake.streams, cids=self.cids, timers=self.timers,
                              close=self.closing, address=self.address, version=self.version_choice,
                              params=self.params, pending=[])
        self.lifecycle.install_initial_keys(initial_keys)
        self._make_halves()
        if settings["plpmtud_probe_interval"]:
            self.sender.pmtu = PmtuProbing(settings["plpmtud_probe_interval"])

    def _make_halves(self) -> None:
        life = self.lifecycle
        self.delivery = Delivery(self.keys, self.handshake.streams, self.streams, life.pending, self.cids,
                                 self.address)
        self.receiver = Receiver(life, phase=self.phase, handshake=self.handshake, ticket=self.ticket,
                                 streams=self.streams, datagrams=self.datagrams,
                                 notifications=self.notifications, delivery=self.delivery)
        self.sender = Sender(life, phase=self.phase, streams=self.streams, datagrams=self.datagrams)

    # ==== what the socket reads and sets ========================================================

    @property
    def state(self) -> ConnState:
        return self.lifecycle.state

    @property
    def handshake_confirmed(self) -> bool:
        return self.lifecycle.handshake_confirmed

    @property
    def key_phase(self) -> int:
        return int(self.phase.send_phase)

    @property
    def version(self) -> int:
        return self.version_choice.version

    @property
    def local_cid(self) -> bytes:
        return self.cids.local_cid

    @property
    def peer_cid(self) -> bytes:
        return self.cids.peer_cid

    @property
    def original_dcid(self) -> bytes:
        return self.cids.original_dcid

    @property
    def retry_scid(self) -> bytes | None:
        return self.cids.retry_scid

    @property
    def cid_generation(self) -> int:
        """Bumped whenever local_cids() changes."""
        return self.cids.generation

    @property
    def token(self) -> bytes:
        """Client: QUIC_SOCKOPT_TOKEN's buffer (AddressValidation.token)."""
        return self.address.token

    @property
    def retries_followed(self) -> int:
        return self.address.retries_followed

    @property
    def peer_addr(self) -> Any:
        return self.address.peer_addr

    @peer_addr.setter
    def peer_addr(self, addr: Any) -> None:
        self.address.peer_addr = addr

    @property
    def close_info(self) -> tuple[int, int, bytes] | None:
        """(error code, frame type, phrase) once closed, as QUIC_SOCKOPT_CONNECTION_CLOSE
        reports it; an idle timeout is all zeros (spec §1.5)."""
        return self.closing.info

    @property
    def peer_close(self) -> fr.ConnectionClose | None:
        return self.closing.peer_close

    @property
    def events(self) -> list[bytes]:
        """Event type byte + payload each (MSG_QUIC_NOTIFICATION); rare."""
        return self.notifications.queue

    @property
    def event_mask(self) -> int:
        return self.notifications.mask

    @event_mask.setter
    def event_mask(self, mask: int) -> None:
        self.notifications.mask = mask

    @property
    def send_rewriter(self) -> SendRewriter | None:
        return self.sender.send_rewriter

    @send_rewriter.setter
    def send_rewriter(self, rewriter: SendRewriter | None) -> None:
        self.sender.send_rewriter = rewriter

    # ==== the wire ================================================================================

    def receive_datagram(self, data: bytes, addr: Any, now: float, lag: float = 0.0,
                         opened: OpenedInitial | None = None) -> None:
        """See Receiver.receive_datagram. A received datagram is a transmit trigger."""
        self.sender.corked = False
        self.receiver.receive_datagram(data, addr, now, lag, opened)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        sender = self.sender
        if sender.pmtu is None:
            return sender.datagrams_to_send(now)
        probe = sender.pmtu_probe(sender.pmtu, now)
        out = sender.datagrams_to_send(now)
        if probe is not None:
            out.append(probe)
        return out

    # ==== keys ==================================================================================

    def install_secret(self, level: int, send: bool, cipher_type: int, secret: bytes) -> None:
        """CRYPTO_SECRET (spec §1.4, §2.4). Only the secret is kept: the keys are derived at
        first use (a receive key with parked packets at once, by the replay below) or in
        idle time (idle_work), so a key install costs the datagrams about to leave nothing."""
        if self.lifecycle.state is not _ESTABLISHING:
            raise sim_error(errno.EINVAL, "CRYPTO_SECRET outside ESTABLISHING")
        key = self.keys.new_key(level, cipher_type, secret, self.version_choice.qv)
        self.sender.corked = False  # a key install is a transmit trigger
        if send:
            self.keys.send[level] = key
            if level == APP and APP in self.keys.recv:
                self.lifecycle.complete()
            return
        self.keys.recv[level] = key
        if level == APP:
            self.ticket.open = True
            self.address.token = b""  # freed, so a NEW_TOKEN can be stored (spec §2.4)
        self.receiver.replay_parked(level)  # packets that waited for this key (spec §2.4)
        if self.lifecycle.state is _CLOSED:
            # As the kernel (spec §9, socket.c's CRYPTO_SECRET handler): the key is in, but
            # a replayed packet closed the connection (a peer that closed right after its
            # Finished), and the setsockopt itself reports it.
            raise sim_error(errno.EPIPE, "a buffered packet closed the connection")
        if level == APP and APP in self.keys.send:
            self.lifecycle.complete()

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
        if self.handshake.app_started:
            self.keys.derive_all()
        else:
            self.keys.forget_derived()
        return self._issue_scheduled_cids()

    def derive_keys(self) -> None:
        """Derive every installed key not derived yet (RFC 9001 §5.1; PacketKey.derive):
        after the flush that sent what the keys' install triggered, and before the answer
        that needs them."""
        self.keys.derive_all()

    def migrate(self, path: Any, now: float) -> None:
        """QUIC_SOCKOPT_CONNECTION_MIGRATION in ESTABLISHED: validate `path` (a Route through
        the endpoint's socket at the new local address) and move there (path.py)."""
        if self.address.path.busy:
            raise sim_error(errno.EAGAIN, "a migration is in progress")
        self.sender.corked = False
        migration.start_own_path(self.sender, path, now)

    def set_preferred_address(self, local: tuple[Any, ...]) -> None:
        """QUIC_SOCKOPT_CONNECTION_MIGRATION in ESTABLISHING (server): advertise `local`
        as preferred_address (RFC 9000 §9.6); EINVAL on a client or if the client sent
        disable_active_migration (socket.c)."""
        if self.is_client or (self.params.peer_set and self.params.peer["disable_active_migration"]):
            raise sim_error(errno.EINVAL, "preferred address: not a server, or migration disabled")
        self.address.path.preferred_local = local

    def key_update(self) -> None:
        """QUIC_SOCKOPT_KEY_UPDATE: start a key update (RFC 9001 §6.1)."""
        if self.lifecycle.state is not _ESTABLISHED:
            raise sim_error(errno.EPIPE, "key update outside ESTABLISHED")
        app = self.spaces.by_id[APP]
        if (not self.lifecycle.handshake_confirmed or APP not in self.keys.send
                or self.phase.update_pending(app.largest_acked)):
            raise sim_error(errno.EINVAL, "a key update is still pending")
        self.phase.start_update(app.next_pn)

    # ==== handshake data path (spec §2.2, §2.3) =================================================

    def send_crypto(self, level: int, data: bytes, more: bool = False) -> None:
        if self.lifecycle.state is _CLOSED:
            raise sim_error(errno.EPIPE, "handshake send on a closed connection")
        if level not in (APP, INITIAL, HANDSHAKE):
            raise sim_error(errno.EINVAL, f"handshake send at level {level}")
        if level not in self.keys.send:
            raise sim_error(errno.EINVAL, f"no send key at level {level}")
        if not data:
            raise sim_error(errno.EMSGSIZE, "empty handshake send")
        self.handshake.streams[level].send.write(bytes(data))
        self.sender.corked = more
        self.timers.hold_until = None  # the response: held ACKs and frames go with it

    def recv_crypto(self, max_len: int) -> tuple[int, bytes, bool] | None:
        if self.lifecycle.restart_pending:
            # A Version Negotiation restarted the connection (lifecycle.py): the agent
            # sends a new ClientHello. Simulation only: the kernel re-sends the old one.
            self.lifecycle.restart_pending = False
            raise sim_error(errno.ERESTART, f"restart the handshake in QUIC version "
                                            f"{describe_versions((self.version_choice.version,))}")
        return self.handshake.read(max_len)

    def session_ticket(self) -> bytes:
        return self.ticket.ticket()

    def replace_ticket(self, blob: bytes) -> None:
        self.ticket.replace(blob)

    # ==== transport parameters (spec §1.4, §5) ==================================================

    def local_transport_params_blob(self) -> bytes:
        if self.lifecycle.state is not _ESTABLISHING:
            raise sim_error(errno.EINVAL, "TRANSPORT_PARAM_EXT outside ESTABLISHING")
        cids, local = self.cids, self.params.local
        needs_token = tparams.needs_reset_token(local, is_client=self.is_client)
        return tparams.build_local_blob(
            local, is_client=self.is_client, local_cid=cids.local_cid,
            original_dcid=cids.original_dcid, version=self.version_choice.version,
            peer_sent_version_info=self.params.peer_sent_version_info, retry_scid=cids.retry_scid,
            reset_token=cids.reset_token(cids.local_cid) if needs_token else None,
            preferred_address=self._preferred_address())

    def _preferred_address(self) -> PreferredAddress | None:
        """Server: preferred_address with our CID of sequence number 1 (RFC 9000 §18.2)."""
        local = self.address.path.preferred_local
        if local is None or self.is_client:
            return None
        return migration.encode_preferred(local, *self.cids.preferred_address_cid())

    def set_peer_transport_params_blob(self, blob: bytes) -> None:
        if self.lifecycle.state is not _ESTABLISHING:
            raise sim_error(errno.EINVAL, "TRANSPORT_PARAM_EXT outside ESTABLISHING")
        if len(blob) > tparams.MAX_BLOB:
            raise sim_error(errno.EINVAL, "TRANSPORT_PARAM_EXT over 512 bytes")
        cids = self.cids
        try:
            peer = tparams.parse_peer_blob(bytes(blob), we_are_client=self.is_client,
                                           original_dcid=cids.original_dcid, peer_cid=cids.peer_cid,
                                           retry_scid=cids.retry_scid)
            switch_to = self.version_choice.negotiate(peer.version_information, is_client=self.is_client)
        except QuicError as exc:
            self.lifecycle.close_locally(exc.error_code, 0, exc.reason.encode()[:63])
            wrong_version = exc.error_code == QuicErrorCode.VERSION_NEGOTIATION_ERROR
            code = errno.EPROTONOSUPPORT if wrong_version else errno.EINVAL
            raise sim_error(code, f"peer transport parameters: {exc}") from None
        if switch_to is not None:
            self.lifecycle.change_version(switch_to)
        self.params.accept_peer(peer)
        if peer.stateless_reset_token is not None:
            cids.set_peer_reset_token(peer.stateless_reset_token)
        if peer.preferred_address is not None:
            self._take_preferred_address(peer.preferred_address)
        self._peer_params_changed()

    def _take_preferred_address(self, pa: PreferredAddress) -> None:
        """Client: the server's preferred address, moved to at HANDSHAKE_DONE if usable and
        not where we are (frame.c quic_frame_parse_transport_params_ext); its CID is the
        server's sequence number 1 either way."""
        self.cids.add_preferred_peer_cid(pa.connection_id, pa.stateless_reset_token)
        peer = self.address.peer_addr
        family = socket.AF_INET6 if peer is not None and len(peer) == 4 else socket.AF_INET
        target = migration.decode_preferred(pa, family)
        if target is not None and tuple(target[:2]) != tuple(peer[:2]):
            self.address.path.preferred = target

    def _peer_params_changed(self) -> None:
        self.streams.apply_peer_params(self.params.peer)
        self.timers.set_idle_timeout(self.params.idle_timeout())

    def get_transport_param(self, remote: bool) -> dict[str, int]:
        return dict(self.params.remote if remote else self.params.local)

    def set_transport_param(self, fields: dict[str, int], remote: bool) -> None:
        state = self.lifecycle.state
        if state is _ESTABLISHED or (remote and state is not _ESTABLISHING):
            raise sim_error(errno.EINVAL, "TRANSPORT_PARAM after the handshake")
        self.params.set(fields, remote)
        if remote:
            self._peer_params_changed()
        else:
            self.streams.apply_local_params(self.params.local)
            self.timers.set_idle_timeout(self.params.idle_timeout())

    # ==== streams and datagrams ==================================================================

    def _stream_limit_errno(self) -> int:
        # Before the 1-RTT keys an over-limit open fails with EINVAL, later with EAGAIN.
        return errno.EAGAIN if self.lifecycle.state is _ESTABLISHED else errno.EINVAL

    def open_stream(self, uni: bool) -> int:
        if self.lifecycle.state is _CLOSED:
            raise sim_error(errno.EPIPE, "stream open on a closed connection")
        return self.streams.open_local(uni, self._stream_limit_errno())

    def stream_send(self, stream_id: int, data: bytes, fin: bool = False) -> int:
        """Queue stream data; returns how much the flow-control credit let in (EAGAIN if
        none of a non-empty send)."""
        if self.lifecycle.state is _CLOSED:
            raise sim_error(errno.EPIPE, "stream send on a closed connection")
        if not data and not fin:
            raise sim_error(errno.EINVAL, "empty stream send without FIN")
        stream = self.streams.stream_for_send(stream_id, self._stream_limit_errno())
        if stream.send is None or stream.send.fin or stream.reset_pending is not None:
            raise sim_error(errno.EINVAL, f"stream {stream_id} is finished for sending")
        sent = self.streams.write(stream, bytes(data), fin)
        self.sender.corked = False
        return sent

    def stream_reset(self, stream_id: int, errcode: int) -> None:
        """QUIC_SOCKOPT_STREAM_RESET: abandon sending, RESET_STREAM to the peer."""
        if self.lifecycle.state is not _ESTABLISHED:
            raise sim_error(errno.EINVAL, "stream reset outside ESTABLISHED")
        self.streams.reset(stream_id, errcode)
        self.sender.corked = False

    def stream_stop_sending(self, stream_id: int, errcode: int) -> None:
        """QUIC_SOCKOPT_STREAM_STOP_SENDING: ask the peer to stop sending on a stream."""
        if self.lifecycle.state is not _ESTABLISHED:
            raise sim_error(errno.EINVAL, "stop sending outside ESTABLISHED")
        self.streams.stop_sending(stream_id, errcode)
        self.sender.corked = False

    def stream_recv(self, max_len: int) -> tuple[int, bytes, bool] | None:
        if not self.keys.app_readable:
            return None
        return self.streams.read(max_len)

    def datagram_send(self, data: bytes) -> None:
        """RFC 9221 DATAGRAM (MSG_QUIC_DATAGRAM)."""
        if self.lifecycle.state is _CLOSED:
            raise sim_error(errno.EPIPE, "datagram send on a closed connection")
        self.datagrams.queue_send(data, self.params.peer["max_datagram_frame_size"])
        self.sender.corked = False

    def datagram_recv(self) -> bytes | None:
        return self.datagrams.receive()

    def has_item(self) -> bool:
        """A recvmsg would return at once: handshake data, an event, readable stream data or
        a datagram, or the ENOTCONN of a closed connection."""
        life = self.lifecycle
        return (bool(self.handshake.queue) or life.state is _CLOSED or life.restart_pending
                or bool(self.notifications.queue)
                or (self.keys.app_readable and (self.streams.readable() or bool(self.datagrams.inbound))))

    def pending_readable(self) -> bool:
        return (bool(self.handshake.queue) or self.lifecycle.state is _CLOSED
                or bool(self.datagrams.inbound) or bool(self.notifications.queue)
                or (APP in self.keys.recv and self.streams.readable()))

    # ==== connection IDs and tokens ================================================================

    def local_cids(self) -> list[bytes]:
        """Every CID the peer may address us with (the endpoint demultiplexes on them)."""
        return self.cids.all_local()

    def send_new_token(self) -> None:
        """Server QUIC_SOCKOPT_TOKEN set (spec §1.4): EINVAL unless ESTABLISHED, EAGAIN
        while the last NEW_TOKEN is unacknowledged."""
        if self.is_client or self.lifecycle.state is not _ESTABLISHED:
            raise sim_error(errno.EINVAL, "NEW_TOKEN outside ESTABLISHED")
        if self.address.token_in_flight:
            raise sim_error(errno.EAGAIN, "a NEW_TOKEN is in flight")
        if not self.lifecycle.queue_new_token():
            raise sim_error(errno.EINVAL, "no token source")
        self.sender.corked = False

    def set_token(self, token: bytes) -> None:
        """Client QUIC_SOCKOPT_TOKEN set: the token of the next Initial packets."""
        self.address.token = bytes(token)

    def _issue_scheduled_cids(self) -> bool:
        """The completion step's NEW_CONNECTION_IDs, if still owed (idle_work, handle_timer;
        owed only while ESTABLISHED: the close drops them)."""
        if self.cids.due is None:
            return False
        return self.lifecycle.issue_connection_ids()

    # ==== close ===================================================================================

    def close(self, errcode: int | None = 0, phrase: bytes = b"", app: bool = True) -> None:
        """ESTABLISHING: transport CONNECTION_CLOSE (errcode None = 0x0c APPLICATION_ERROR)
        at Initial and Handshake level; ESTABLISHED: 0x1d (or 0x1c if not app) in 1-RTT."""
        state = self.lifecycle.state
        if state is _CLOSED:
            return
        phrase = bytes(phrase)[:63]
        if state is _ESTABLISHING:
            code = QuicErrorCode.APPLICATION_ERROR if errcode is None else errcode
            self.lifecycle.close_locally(int(code), 0, phrase)
        else:
            self.lifecycle.close_locally(errcode or 0, 0, phrase, app=app)

    # ==== timers ==================================================================================

    def _loss_timer(self) -> LossTimer | None:
        """(when, space, is_loss_timer) of the loss-detection timer."""
        life, spaces = self.lifecycle, self.spaces
        best = spaces.loss_timer(app_probes=life.handshake_confirmed,  # RFC 9002 A.8
                                 max_ack_delay=self.params.peer["max_ack_delay"] / 1e6)
        if best is None and self.is_client and life.state is _ESTABLISHING:
            # RFC 9002 §6.2.2.1: keep probing so a server stuck at its amplification
            # limit gets more credit.
            sid = HANDSHAKE if HANDSHAKE in self.keys.send else INITIAL
            if sid in self.keys.send:
                best = (self.timers.last_send + spaces.recovery.pto_interval(0.0), sid, False)
        return best

    def get_timer(self) -> float | None:
        """The earliest of the idle, hold, CID issuance, loss/PTO and ACK timers (called
        after every socket call: no allocations beyond the loss timer's tuple)."""
        if self.lifecycle.state is _CLOSED:
            return None
        timers = self.timers
        best = timers.idle_deadline
        cids = self.cids.due
        if cids is not None and (best is None or cids < best):
            best = cids
        hold = timers.hold_until
        if hold is not None and (best is None or hold < best):
            best = hold
        loss = self._loss_timer()
        if loss is not None and (best is None or loss[0] < best):
            best = loss[0]
        pmtu = self.sender.pmtu
        if pmtu is not None and pmtu.deadline is not None and (best is None or pmtu.deadline < best):
            best = pmtu.deadline
        path = self.address.path.deadline
        if path is not None and (best is None or path < best):
            best = path
        return self.spaces.ack_timer(best, hold)

    def handle_timer(self, now: float) -> None:
        timers = self.timers
        timers.now = now
        if self.lifecycle.state is _CLOSED:
            return
        if timers.hold_until is not None and now >= timers.hold_until:
            timers.hold_until = None
        if timers.idle_deadline is not None and now >= timers.idle_deadline:
            if self.closing.info is None:
                self.closing.info = (0, 0, b"")  # idle timeout: an all-zero close (spec §1.5)
            self.lifecycle.enter_closed()
            return
        if self.cids.due is not None and now >= self.cids.due:
            self._issue_scheduled_cids()  # nobody had idle time for them: now
        self.sender.corked = False
        if self.sender.pmtu is not None:
            self.sender.pmtu.on_timer(now)
        if self.address.path.deadline is not None:
            migration.on_timer(self.sender, now)
        loss = self._loss_timer()
        if loss is None or loss[0] > now:
            return
        self._on_loss_timer(loss, now)

    def _on_loss_timer(self, loss: LossTimer, now: float) -> None:
        """Loss detection (RFC 9002 §6.1) or a probe timeout (§6.2) fired."""
        _, sid, is_loss = loss
        spaces = self.spaces
        if is_loss:
            self.delivery.on_lost(spaces.recovery.detect_lost(spaces.by_id[sid], now))
            return
        spaces.recovery.pto_count += 1
        if sid not in self.keys.discarded:
            self.handshake.streams[sid].send.retransmit_all()
        if sid == APP:
            self.streams.retransmit_all()
        spaces.probe_owed(sid)
        self.timers.last_send = now

