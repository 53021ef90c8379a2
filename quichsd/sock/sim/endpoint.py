"""A UDP endpoint of the simulation: one UDP socket, many connections, no thread of its own.

Somebody has to play the kernel's part: read datagrams, demultiplex them by connection ID
(a new client Initial goes to a listener, chosen by the ClientHello's ALPN as the kernel
does, spec §2.7), run timers and send what connections queue. Who does it:

- sends leave inline, from the thread whose socket call queued them;
- an application thread blocked in recvmsg or accept on one of the endpoint's sockets
  "leads" the endpoint: it polls the UDP socket itself, so a datagram goes from the wire
  to the reader in one thread, with no handoff (other threads blocked on the same
  endpoint wait on its condition and are notified after every step);
- otherwise one reactor thread per process (reactor.py) watches the endpoint, for what
  happens between socket calls: ACKs, retransmissions, idle timeouts, new connections
  for a listener. It starts watching 2 ms after the last reader left (WATCH_GRACE), since
  a handshake agent is usually back in a socket call by then.

Either of them does the connections' idle work (SimConnection.idle_work: key derivation,
the completion step's NEW_CONNECTION_IDs) once what the socket calls queued is on the wire:
a leader right before it blocks, the reactor at each of its steps.

All connection state is touched under the endpoint's lock.

A new client Initial meets the endpoint's admission first (admission.py, RFC 9000 §8.1):
its token is checked (quic/address_token.py), and an unvalidated client gets a stateless
Retry when the listener asks for address validation (the kernel's validate_peer_address)
or when too many unvalidated connections are half-open; over the hard caps it is dropped.
Where this differs from the kernel, on purpose: the kernel only retries when asked and
only looks at tokens then (a failing token: Retry again, or INVALID_TOKEN for a Retry
token); here a Retry token is always checked, since an automatic Retry may have issued
it, and a valid NEW_TOKEN token lifts the amplification limit even without validation.
The kernel answers a connection it cannot make with CONNECTION_REFUSED; over its caps the
endpoint drops the Initial, so a flood gets nothing back. Token bytes differ (both are
opaque to the client; each server reads only its own).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...quic.address_token import AddressTokens, TokenKind, ValidToken, kind_of
from ...quic.errors import QuicErrorCode
from ...quic.packet_protection import PacketKey, initial_keys
from ...quic.versions import QUIC_V1, QUIC_V2, SUPPORTED_VERSIONS, LongPacketType
from . import frames as fr
from .admission import Admission, AdmissionLimits, RateLimitedLog
from .cids import stateless_reset
from .connection import SimConnection
from .listener_peek import (
    ClientHelloRejected,
    OpenedInitial,
    client_hello_alpn,
    client_initial_header,
    open_client_initial,
    packet_dcid,
)
from .local_paths import LocalPaths
from .packets import (
    MIN_INITIAL_DATAGRAM,
    PacketError,
    PacketHeader,
    build_long_packet,
    build_retry,
    build_version_negotiation,
    grease_version,
    parse_header,
)
from .path import Route
from .reactor import reactor
from .state import ConnState
from .udp_io import UdpIO

log = logging.getLogger(__name__)

Address = tuple[Any, ...]
SHORT_HEADER_CID_LEN = 8  # the CIDs we issue are 8 bytes, as the kernel's
MAX_READS_PER_STEP = 64
# RFC 9001 §8.1: no_application_protocol (TLS alert 120) as a QUIC error, 0x100 + alert.
NO_APPLICATION_PROTOCOL = 0x100 + 120
# What a Version Negotiation lists (plus a greased version): the kernel's list and order.
VN_VERSIONS = (QUIC_V1.number, QUIC_V2.number)


# Eight bytes: what an eventfd takes (a count of 1), and as good as one byte in a pipe.
_WAKE = (1).to_bytes(8, sys.byteorder)

if hasattr(os, "eventfd"):
    def _wake_fds() -> tuple[int, int]:
        """The wake-up channel: one non-blocking eventfd (one syscall, where a pipe set
        non-blocking takes five), read and written at the same descriptor."""
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd
else:  # pragma: no cover - not Linux
    def _wake_fds() -> tuple[int, int]:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        return r, w


class Listener:
    """A listening socket's registration on an endpoint. `validate_peer_address`
    reads the socket's QUIC_SOCKOPT_CONFIG field of that name (settable after listen)."""

    def __init__(self, alpns: list[bytes], backlog: int, make_connection: Callable[..., SimConnection],
                 validate_peer_address: Callable[[], bool] = lambda: False) -> None:
        self.alpns = alpns
        self.backlog = backlog
        self.make_connection = make_connection
        self.validate_peer_address = validate_peer_address
        self.pending: deque[SimConnection] = deque()
        self.secret = os.urandom(32)  # the listener's ticket secret (spec §1.4)


@dataclass
class EndpointStats:
    """What the endpoint did with client Initials that made no connection (tests, logs)."""

    retries_sent: int = 0
    invalid_tokens: int = 0  # Retry tokens that failed: INVALID_TOKEN (RFC 9000 §8.1.3)
    dropped_over_limit: int = 0
    no_listener: int = 0  # no listener for the offered ALPNs: refused with 0x178
    version_negotiations: int = 0  # Version Negotiation packets sent


@dataclass(frozen=True, slots=True)
class _Admitted:
    original_dcid: bytes
    retry_scid: bytes | None
    validated: bool


ADMISSION_LIMITS = AdmissionLimits()  # what new endpoints get (tests may pass their own)
_log_no_listener = RateLimitedLog(log, logging.WARNING)
_log_over_limit = RateLimitedLog(log, logging.INFO)


class Endpoint:
    def __init__(self, family: int, local: Address | None = None,
                 limits: AdmissionLimits | None = None) -> None:
        self.family = family
        self.tokens = AddressTokens()  # a random key per endpoint: tokens die with it
        self.reset_key = os.urandom(32)  # its server connections' stateless reset tokens
        self.admission = Admission(limits or ADMISSION_LIMITS)
        self.stats = EndpointStats()
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            self.udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.udp.bind(local if local is not None else ("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        self.udp.setblocking(False)
        self.io = UdpIO(self.udp)  # several datagrams per system call where Linux can
        self.local_address: Address = self.udp.getsockname()
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.connections: dict[bytes, SimConnection] = {}  # by every CID that reaches it
        self.listeners: list[Listener] = []
        self._live: dict[SimConnection, int] = {}  # connection -> cid_generation registered
        self._leader: int | None = None  # ident of the thread polling the socket itself
        self._leader_wakes_at = math.inf  # when the leader's poll returns at the latest
        # Another thread that changes the endpoint while a leader sleeps in poll() writes
        # here, so the leader sees new timers and readable data (rare: one thread per
        # connection is the usual case).
        self._wake_r, self._wake_w = _wake_fds()
        self._poller = select.poll()
        self._poller.register(self.udp.fileno(), select.POLLIN)
        self._poller.register(self._wake_r, select.POLLIN)
        self._closed = False
        self._users = 0
        self.paths = LocalPaths(self, self._poller)  # other local addresses (connection migration, path.py)
        with self.lock:
            reactor().attach(self, None)

    def watch_fd(self) -> int:
        """What the reactor polls for this endpoint's datagrams: its socket, or one epoll
        over all its sockets once it has others (LocalPaths)."""
        return self.paths.watch_fd()

    def bind_path(self, conn: SimConnection, local: Address) -> Address:
        """A socket at another local address for `conn` (lock held): its bound address."""
        bound, new = self.paths.bind(conn, local)
        if new and self._leader is None and not self._closed:
            reactor().detach(self)  # it watches the endpoint's fd, which is now the epoll's
            reactor().attach(self, self.next_timer())
        return bound

    # -- registration ------------------------------------------------------------------

    def acquire(self) -> None:
        with self.lock:
            self._users += 1

    def release(self) -> None:
        with self.lock:
            self._users -= 1
            last = self._users <= 0
        if last:
            self.shutdown()

    def add_connection(self, conn: SimConnection) -> None:
        with self.lock:
            self._register(conn)
            self.after_call(conn)

    def _register(self, conn: SimConnection) -> None:
        """Map every CID the peer may address `conn` with (they change as it issues
        NEW_CONNECTION_IDs and retires old ones)."""
        for cid in conn.local_cids():
            self.connections[cid] = conn
        self._live[conn] = conn.cid_generation

    def remove_connection(self, conn: SimConnection) -> None:
        with self.lock:
            self.admission.settle(conn)
            for cid in [c for c, v in self.connections.items() if v is conn]:
                del self.connections[cid]
            self._live.pop(conn, None)
            self.paths.release(conn)

    def add_listener(self, listener: Listener) -> None:
        with self.lock:
            for other in self.listeners:
                same = set(other.alpns) == set(listener.alpns)
                if same or set(other.alpns) & set(listener.alpns):
                    raise OSError(errno.EADDRINUSE, "a listener with these ALPNs exists on this address")
            self.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self.lock:
            if listener in self.listeners:
                self.listeners.remove(listener)

    def shutdown(self) -> None:
        """The last socket is gone: send the last CONNECTION_CLOSEs and close."""
        with self.lock:
            if self._closed:
                return
            self._flush_all(time.time())
            self._closed = True
            reactor().detach(self)
            self._poke_leader()
            self.changed.notify_all()
            self.udp.close()
            self.paths.close()
            if self._leader is None:
                self._close_pipe()

    def _close_pipe(self) -> None:
        os.close(self._wake_r)
        if self._wake_w != self._wake_r:
            os.close(self._wake_w)
        self._wake_r = self._wake_w = -1

    # -- after a socket call (caller holds the lock) ------------------------------------

    def after_call(self, conn: SimConnection | None) -> None:
        """A socket call changed `conn`: send what it queued now, and make sure whoever
        watches the endpoint (a leader in another thread, or the reactor) sees its new
        timer and what became readable."""
        if self._closed:
            return
        now = time.time()
        if conn is not None:
            self._flush(conn, now)
            self._refresh_cids(conn)
            if conn.state is not ConnState.ESTABLISHING:
                self.admission.settle(conn)
        if self._leader is not None:
            if self._leader != threading.get_ident():
                self._poke_leader()
            return
        self.changed.notify_all()
        reactor().reschedule(self, self.next_timer())

    def send_queued(self, conn: SimConnection) -> None:
        """Send what `conn` queued, nothing more (caller holds the lock and calls
        after_call before releasing it)."""
        if not self._closed:
            self._flush(conn, time.time())

    def _poke_leader(self) -> None:
        if self._leader is None or self._wake_w < 0:
            return
        with contextlib.suppress(OSError):  # BlockingIOError: a full pipe wakes the leader as well
            os.write(self._wake_w, _WAKE)

    # -- driving ---------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """The earliest connection timer (time.time() clock), under the lock."""
        best: float | None = None
        for conn in self._live:
            timer = conn.get_timer()
            if timer is not None and (best is None or timer < best):
                best = timer
        return best

    def wait_for(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Block (lock held, once or more) until ready() or the monotonic `deadline`;
        False on timeout. Leads the endpoint while nobody else does."""
        me = threading.get_ident()
        led = False
        try:
            while not ready():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._closed or (self._leader is not None and self._leader != me):
                    self.changed.wait(remaining)
                    continue
                if not led:
                    led = True
                    self._leader = me
                    reactor().detach(self)
                self._idle_work()
                self._poll(remaining)
                if not self._closed:
                    self.step(time.time())
            return True
        finally:
            if led:
                self._leader = None
                if self._closed:
                    if self._wake_r >= 0:
                        self._close_pipe()
                else:
                    reactor().attach(self, self.next_timer())
                self.changed.notify_all()  # a follower may lead now

    def _idle_work(self) -> None:
        """Idle time (before a wait, or a reactor step): what was queued is on the wire, so
        each connection does the work kept off that path (SimConnection.idle_work: keys
        installed but not used yet, the NEW_CONNECTION_IDs of its completion step); what
        that queued is registered (its new CIDs) and sent."""
        for conn in self._live:
            if conn.idle_work():
                self._refresh_cids(conn)  # demultiplex on the new CIDs before they leave
                self._flush(conn, time.time())

    def _poll(self, remaining: float | None) -> None:
        """Sleep in poll() on the UDP socket, with the lock released, until a datagram,
        the next timer, a poke or `remaining` seconds."""
        now = time.time()
        timer = self.next_timer()
        timeout = remaining
        if timer is not None:
            due = max(0.0, timer - now)
            timeout = due if timeout is None else min(timeout, due)
        self._leader_wakes_at = math.inf if timeout is None else now + timeout
        # RLock internals, as threading.Condition.wait uses them: release however deeply
        # the caller holds the lock, and restore that depth afterwards.
        saved = self.lock._release_save()  # type: ignore[attr-defined]
        try:
            events = self._poller.poll(None if timeout is None else timeout * 1000.0)
        finally:
            self.lock._acquire_restore(saved)  # type: ignore[attr-defined]
        self._leader_wakes_at = math.inf
        if any(fd == self._wake_r for fd, _ in events):
            self._drain_pipe()

    def _drain_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def step(self, now: float, lag: float = 0.0) -> None:
        """One round of the kernel's work (lock held): read what arrived (what may have
        waited up to `lag` seconds in the socket), run due timers, send, notify waiters."""
        self._read_datagrams(now, lag)
        if self.paths.sockets:
            self.paths.read(now, lag)
        for conn in list(self._live):
            timer = conn.get_timer()
            if timer is not None and timer <= now:
                conn.handle_timer(now)
                if conn.state is not ConnState.ESTABLISHING:
                    self.admission.settle(conn)
        self._flush_all(now)
        for conn in list(self._live):
            self._refresh_cids(conn)
        self.changed.notify_all()

    def background_step(self, now: float, readable: bool, lag: float = 0.0) -> None:
        """The reactor's step: only while no application thread leads the endpoint."""
        with self.lock:
            if self._closed or self._leader is not None:
                return
            if readable:
                self.step(now, lag)
            else:
                timer = self.next_timer()
                if timer is not None and timer <= now:
                    self.step(now)
            self._idle_work()  # nobody blocks on the endpoint: the reactor has the idle time
            # The reactor keeps each endpoint's earliest timer: tell it the new one
            # (also when the one it had was stale), or it would wake for it again.
            reactor().reschedule(self, self.next_timer())

    def _refresh_cids(self, conn: SimConnection) -> None:
        registered = self._live.get(conn)
        if registered is not None and registered != conn.cid_generation:
            self._register(conn)

    def _flush(self, conn: SimConnection, now: float) -> None:
        out = conn.datagrams_to_send(now)
        if self.paths.sockets:
            out = self.paths.send_routed(out)  # those on paths through our other addresses
        self.io.send(out)  # a failure is lost as on UDP: a retransmission follows

    def _flush_all(self, now: float) -> None:
        for conn in list(self._live):
            self._flush(conn, now)

    def _read_datagrams(self, now: float, lag: float = 0.0) -> None:
        read = 0
        while read < MAX_READS_PER_STEP:
            read += 1
            try:
                datagrams, addr = self.io.receive()  # a coalesced run counts as what it holds
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors surface here on Linux
                log.debug("recvfrom: %s", exc)
                continue
            read += len(datagrams) - 1
            for data in datagrams:
                try:
                    self._deliver(data, addr, now, lag)
                except Exception:  # a datagram must not take the simulated kernel down
                    log.exception("simulation endpoint: delivering a datagram from %s failed", addr)

    def deliver_on_path(self, data: bytes, route: Route, now: float, lag: float) -> None:
        """A datagram that came to another of our local addresses: only for a connection
        that migrated or may migrate there (no listener answers at those addresses)."""
        dcid = packet_dcid(data, SHORT_HEADER_CID_LEN)
        conn = self.connections.get(dcid) if dcid is not None else None
        if conn is None and not self.listeners and not data[0] & 0x80:
            conn = self._client_connection()
        if conn is not None:
            conn.receive_datagram(data, route, now, lag)

    def _deliver(self, data: bytes, addr: Address, now: float, lag: float = 0.0) -> None:
        dcid = packet_dcid(data, SHORT_HEADER_CID_LEN)
        if dcid is None:
            return
        conn = self.connections.get(dcid)
        if conn is None and not self.listeners and not data[0] & 0x80:
            conn = self._client_connection()  # its datagram may be a stateless reset (§10.3.1)
        if conn is None:
            accepted = self._new_server_connection(data, addr, now)
            if accepted is None:
                return
            conn, opened = accepted
            conn.receive_datagram(data, addr, now, lag, opened)
        else:
            conn.receive_datagram(data, addr, now, lag)
        if conn.state is not ConnState.ESTABLISHING:
            self.admission.settle(conn)

    def _client_connection(self) -> SimConnection | None:
        """The one connection of a client's endpoint, which gets every datagram as the
        kernel's connected socket does; None on an endpoint without a client connection."""
        conn = next(iter(self.connections.values()), None)
        return conn if conn is not None and conn.is_client else None

    def _new_server_connection(self, data: bytes, addr: Address,
                               now: float) -> tuple[SimConnection, OpenedInitial] | None:
        """A client Initial for no known connection: pick the listener (spec §2.7). The
        Initial is unprotected once, for the ALPN peek, and the connection takes it so."""
        if not self.listeners:
            return None
        header = client_initial_header(data)
        if header is None:
            # RFC 9000 §10.3: a 1-RTT packet for no connection gets a Stateless Reset, as
            # from the kernel's listener (packet.c); a long header maybe a VN.
            reset = stateless_reset(data, self.reset_key, SHORT_HEADER_CID_LEN)
            if reset is not None:
                self._sendto(reset, addr)
            else:
                self._maybe_negotiate_version(data, addr)
            return None
        keys = initial_keys(header.dcid, SUPPORTED_VERSIONS[header.version])  # for peek and connection
        try:
            opened = open_client_initial(data, header, keys[0])
            alpns = client_hello_alpn(opened.payload)
        except ClientHelloRejected as exc:  # the kernel drops these too (spec §2.7)
            log.debug("dropping an Initial from %s: %s", addr, exc)
            return None
        listener = self._pick_listener(alpns)
        if listener is None:
            self._refuse_alpn(header, addr, keys, alpns)
            return None
        admitted = self._admit(header, addr, listener, keys, now)
        if admitted is None or len(listener.pending) >= max(1, listener.backlog):
            return None
        conn = listener.make_connection(version=header.version, original_dcid=admitted.original_dcid,
                                        peer_cid=header.scid, peer_addr=addr, token=header.token, now=now,
                                        listener=listener, initial_keys=keys, initial_dcid=header.dcid,
                                        retry_scid=admitted.retry_scid, validated=admitted.validated,
                                        token_source=self._token_source(addr))
        conn.cids.use_reset_key(self.reset_key)  # tokens the endpoint can still answer with
        self._register(conn)  # includes the client's first DCID, used until it learns ours
        self.admission.add(conn, str(addr[0]), admitted.validated)
        listener.pending.append(conn)
        return conn, opened

    # -- address validation (RFC 9000 §8.1) ---------------------------------------------------

    def _admit(self, header: PacketHeader, addr: Address, listener: Listener,
               keys: tuple[PacketKey, PacketKey], now: float) -> _Admitted | None:
        """How a connection for this Initial starts, or None when the endpoint answered
        it statelessly (Retry, INVALID_TOKEN) or dropped it (over a cap)."""
        source = str(addr[0])
        valid = self.tokens.check(header.token, addr, now) if header.token else None
        if header.token and valid is None and kind_of(header.token) is TokenKind.RETRY:
            # §8.1.3: the client will not take another Retry, so the server closes. (The
            # kernel checks tokens only when validating; our automatic Retries mean any
            # listener may have issued it.)
            self.stats.invalid_tokens += 1
            log.debug("invalid Retry token from %s", addr[:2])
            self._send_initial_close(header, addr, keys, QuicErrorCode.INVALID_TOKEN)
            return None
        # A REGULAR token that fails is as good as none (§8.1.3).
        if valid is None and (listener.validate_peer_address() or self.admission.wants_retry(source)):
            self._send_retry(header, addr, now)
            return None
        why = self.admission.refuses(source, valid is not None)
        if why is not None:
            self.stats.dropped_over_limit += 1
            _log_over_limit("dropping a client Initial from %s: %s", addr[:2], why)
            return None
        return _admitted(valid, header.dcid)

    def _token_source(self, addr: Address) -> Callable[[], bytes]:
        """What a connection's NEW_TOKEN frames carry: a REGULAR token for `addr`."""
        return lambda: self.tokens.issue(TokenKind.REGULAR, addr, b"", time.time())

    def _send_retry(self, header: PacketHeader, addr: Address, now: float) -> None:
        """A stateless Retry (RFC 9000 §17.2.5): a fresh SCID, which the client's next
        Initial carries as its DCID, and a RETRY token holding the original DCID."""
        version = SUPPORTED_VERSIONS[header.version]
        token = self.tokens.issue(TokenKind.RETRY, addr, header.dcid, now)
        packet = build_retry(version, header.scid, os.urandom(SHORT_HEADER_CID_LEN), token, header.dcid)
        self.stats.retries_sent += 1
        self._sendto(packet, addr)

    def _send_initial_close(self, header: PacketHeader, addr: Address, keys: tuple[PacketKey, PacketKey],
                            code: int, frame_type: int = 0, reason: bytes = b"") -> None:
        """A CONNECTION_CLOSE in an Initial packet from no connection (RFC 9000 §10.2.3),
        under the server Initial key of the client's DCID; not ack-eliciting, so not padded."""
        version = SUPPORTED_VERSIONS[header.version]
        payload = fr.ConnectionClose(int(code), frame_type, reason).encode()
        packet = build_long_packet(keys[1], version, LongPacketType.INITIAL, header.scid,
                                   os.urandom(SHORT_HEADER_CID_LEN), None, 0, None, payload)
        self._sendto(packet, addr)

    def _refuse_alpn(self, header: PacketHeader, addr: Address, keys: tuple[PacketKey, PacketKey],
                     alpns: list[bytes] | None) -> None:
        """No listener takes the offered ALPNs: close with no_application_protocol (0x178,
        RFC 9001 §8.1), statelessly. The kernel drops the Initial without a word (spec §9);
        here the peer learns at once instead of waiting out its timeout."""
        self.stats.no_listener += 1
        offered = ", ".join(a.decode("ascii", "replace") for a in alpns or []) or "none"
        _log_no_listener("no listener on %s for the ALPNs offered by %s: %s; refused with "
                         "no_application_protocol", self.local_address[:2], addr[:2], offered)
        self._send_initial_close(header, addr, keys, NO_APPLICATION_PROTOCOL, fr.FrameType.CRYPTO,
                                 b"no application protocol")

    def _maybe_negotiate_version(self, data: bytes, addr: Address) -> None:
        """A long header packet of a version we do not speak, for no connection: answer with
        a Version Negotiation (RFC 9000 §6.1, §5.2.2) when its datagram has the 1200 bytes
        of a client's first Initial (§14.1), so the answer, far shorter, amplifies nothing.
        Never to a Version Negotiation (version 0, §6.1); stateless."""
        if len(data) < MIN_INITIAL_DATAGRAM:
            return
        try:
            header = parse_header(data, 0, SHORT_HEADER_CID_LEN)
        except PacketError:
            return
        if not header.is_long or header.version == 0 or header.version in SUPPORTED_VERSIONS:
            return
        rand = int.from_bytes(os.urandom(5), "big")
        versions = (*VN_VERSIONS, grease_version(rand >> 8))
        packet = build_version_negotiation(header.scid, header.dcid, versions, rand)
        self.stats.version_negotiations += 1
        log.debug("Version Negotiation to %s for version 0x%08x", addr[:2], header.version)
        self._sendto(packet, addr)

    def _sendto(self, data: bytes, addr: Address) -> None:
        self.io.send_one(data, addr)

    def _pick_listener(self, client_alpns: list[bytes] | None) -> Listener | None:
        if client_alpns is None:  # no ALPN seen (not parsed, or truncated): any listener
            return self.listeners[0]
        if not client_alpns:
            return next((lst for lst in self.listeners if not lst.alpns), None)
        for proto in client_alpns:  # the client's order decides (spec §2.7)
            for lst in self.listeners:
                if proto in lst.alpns:
                    return lst
        return next((lst for lst in self.listeners if not lst.alpns), None)


def _admitted(valid: ValidToken | None, dcid: bytes) -> _Admitted:
    if valid is None:
        return _Admitted(dcid, None, False)
    if valid.kind is TokenKind.RETRY:  # §7.3: the original DCID came back in the token
        return _Admitted(valid.original_dcid, dcid, True)
    return _Admitted(dcid, None, True)


_registry: dict[tuple[int, Address], Endpoint] = {}
_registry_lock = threading.Lock()


def shared_endpoint(family: int, local: Address) -> Endpoint:
    """Sockets bound to the same address share one UDP endpoint (spec §1.1)."""
    with _registry_lock:
        key = (family, tuple(local[:2]))
        endpoint = _registry.get(key) if local[1] else None  # port 0: always a new port
        if endpoint is None or endpoint._closed:
            endpoint = Endpoint(family, local)
            _registry[(family, tuple(endpoint.local_address[:2]))] = endpoint
        return endpoint
