"""SimQuicSocket: the IPPROTO_QUIC socket API served by the userspace simulation.

Same option numbers, same struct bytes (packed and unpacked through quichsd.abi), same
errno for the same misuse as the kernel (spec kernel-quic-abi §1.4), so the handshake code
above it has no `if sim:` branch.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ... import abi
from ..base import QuicSocketBackend, RecvItem, RecvKind
from ..sockaddr import unpack_sockaddr
from .close import describe_peer_close
from .connection import SimConnection
from .endpoint import Endpoint, Listener, shared_endpoint
from .errors import SimError
from .levels import EARLY
from .path import Route, local_of, peer_of
from .pmtud import check_probe_interval
from .state import ConnState

L = abi.lib
_T = TypeVar("_T")
MSG_MORE = 0x8000
MSG_DONTWAIT = 0x40


def _err(code: int, what: str) -> OSError:
    return OSError(code, f"{what}: {errno.errorcode.get(code, code)}")


def _closed_err(code: int, what: str, conn: SimConnection) -> OSError:
    """The kernel's errno for a call on a closed connection (ENOTCONN for recvmsg, EPIPE
    for sendmsg, spec §1.5, §2.2); the message says why, when the peer closed it."""
    peer = conn.peer_close
    return _err(code, f"{what}, {describe_peer_close(peer)}" if peer is not None else what)


class _Batch:
    """SimQuicSocket.batch()'s context manager (holds nest in the socket's count). Made per
    call: one kept on the socket would be a reference cycle, leaving every closed socket
    and its connection to the cyclic garbage collector."""

    __slots__ = ("_sock",)

    def __init__(self, sock: SimQuicSocket) -> None:
        self._sock = sock

    def __enter__(self) -> None:
        self._sock._hold_output(True)

    def __exit__(self, *exc_info: object) -> None:
        self._sock._hold_output(False)


class SimQuicSocket(QuicSocketBackend):
    """One simulated QUIC socket: unbound, listening, or a connection."""

    batches_output = True

    def __init__(self, family: int = socket.AF_INET) -> None:
        self.family = family
        self.endpoint: Endpoint | None = None
        self.conn: SimConnection | None = None
        self.listener: Listener | None = None
        self.timeout: float | None = None
        self.peer: tuple[Any, ...] | None = None
        self.alpn = b""
        self.config: dict[str, int] = {}
        self.local_params: dict[str, int] = {}
        self.token = b""
        self.ticket_blob = b""
        self.events = 0
        self.close_request: tuple[int, bytes] = (0, b"")
        self._listener_secret = b""
        self._bound: tuple[Any, ...] | None = None
        self._closed = False
        self._shut_down = False  # our shutdown() closed the connection (getpeername)
        # batch(): socket options set meanwhile leave their transmit trigger for the end
        # of the batch (or the next send that flushes anyway).
        self._holding = 0
        self._held = False
        self._transmit_now = False

    # -- lifecycle -----------------------------------------------------------------------

    def bind(self, address: tuple[Any, ...]) -> None:
        if self._bound is not None or self.conn is not None:
            raise _err(errno.EINVAL, "bind")
        self._bound = tuple(address)

    def listen(self, backlog: int = 128) -> None:
        if self._bound is None:
            raise _err(errno.EINVAL, "listen on an unbound socket")
        if backlog <= 0:
            if self.listener is not None and self.endpoint is not None:
                self.endpoint.remove_listener(self.listener)
                self.listener = None
            return
        self.endpoint = shared_endpoint(self.family, self._bound)
        self.endpoint.acquire()
        alpns = [a for a in self.alpn.split(b",") if a] if self.alpn else []
        listener = Listener(alpns, backlog, self._make_server_connection,
                            lambda: bool(self.config.get("validate_peer_address")))
        self.endpoint.add_listener(listener)
        self.listener = listener

    def _make_server_connection(self, *, version: int, original_dcid: bytes, peer_cid: bytes,
                                peer_addr: tuple[Any, ...], token: bytes, now: float, listener: Listener,
                                initial_keys: Any = None, **validation: Any) -> SimConnection:
        """`validation`: initial_dcid, retry_scid, validated, token_source (endpoint._admit)."""
        conn = SimConnection(is_client=False, version=version, local_params=dict(self.local_params) or None,
                             config=dict(self.config) or None, peer_cid=peer_cid,
                             original_dcid=original_dcid, token=token, now=now, peer_addr=peer_addr,
                             initial_keys=initial_keys, **validation)
        conn.event_mask = self.events
        return conn

    def accept(self) -> SimQuicSocket:
        listener, endpoint = self.listener, self.endpoint
        if listener is None or endpoint is None:
            raise _err(errno.EINVAL, "accept on a socket that is not listening")
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with endpoint.lock:
            if not endpoint.wait_for(lambda: bool(listener.pending), deadline):
                raise TimeoutError("accept timed out")
            conn = listener.pending.popleft()
        child = SimQuicSocket(self.family)
        child.endpoint, child.conn = endpoint, conn
        child.alpn, child.config, child.local_params = self.alpn, dict(self.config), dict(self.local_params)
        child.events, child.timeout = self.events, self.timeout
        child.peer = child.accepted_peer = conn.peer_addr
        child._listener_secret = listener.secret
        child._bound = self._bound
        endpoint.acquire()
        return child

    def connect(self, address: tuple[Any, ...]) -> None:
        if self.conn is not None:
            raise _err(errno.EINVAL, "connect on a connected socket")
        endpoint = Endpoint(self.family) if self._bound is None else Endpoint(self.family, self._bound)
        endpoint.acquire()
        peer = _resolve(self.family, address)
        version = self.config.get("version") or 1
        conn = SimConnection(is_client=True, version=version, local_params=dict(self.local_params) or None,
                             config=dict(self.config) or None, token=self.token, now=time.time(),
                             peer_addr=peer)
        conn.event_mask = self.events
        self.endpoint, self.conn, self.peer = endpoint, conn, peer
        endpoint.add_connection(conn)

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        conn, endpoint = self.conn, self.endpoint
        if conn is None or endpoint is None:
            raise _err(errno.ENOTCONN, "shutdown")
        with endpoint.lock:
            if conn.state is ConnState.CLOSED or how == socket.SHUT_RD:
                endpoint.after_call(conn)
                return
            # As the kernel: what was queued (a client's last Finished) leaves before the
            # close. Only sent: the one after_call below tells the waiters and the reactor
            # (nobody sees the state in between, the lock is held throughout).
            endpoint.send_queued(conn)
            self._shut_down = True
            errcode, phrase = self.close_request
            conn.close(errcode or None, phrase, app=conn.state is ConnState.ESTABLISHED)
            endpoint.after_call(conn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.conn is not None and self.endpoint is not None:
            endpoint, conn = self.endpoint, self.conn
            with endpoint.lock:
                if conn.state is not ConnState.CLOSED:
                    self.shutdown()  # its after_call sends the CONNECTION_CLOSE
                else:
                    endpoint.after_call(conn)  # what is queued leaves before the connection goes
                endpoint.remove_connection(conn)
            endpoint.release()
        elif self.listener is not None and self.endpoint is not None:
            self.endpoint.remove_listener(self.listener)
            self.endpoint.release()

    def fileno(self) -> int | None:
        return None  # no kernel object behind a simulated socket

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def gettimeout(self) -> float | None:
        return self.timeout

    def getsockname(self) -> tuple[Any, ...]:
        conn = self.conn
        if conn is not None:
            local = local_of(conn.address.peer_addr)
            if local is not None:
                return tuple(local)  # after a move to another local address (path.py)
        if self.endpoint is not None:
            return self.endpoint.local_address
        return self._bound or ("0.0.0.0", 0)

    @property
    def retries_followed(self) -> int:
        """Client: Retry packets its connection followed (0 or 1)."""
        return self.conn.retries_followed if self.conn is not None else 0

    @property
    def endpoint_stats(self) -> Any:
        """The UDP endpoint's EndpointStats (Retries sent, ...), None before bind/connect."""
        return self.endpoint.stats if self.endpoint is not None else None

    def getpeername(self) -> tuple[Any, ...]:
        """As the kernel's (inet_getname): ENOTCONN once the connection is closed, by the
        peer (e.g. one it closed before accept() returned it, spec §9), by a timeout or
        an error, or by our own shutdown()."""
        conn = self.conn
        if self.peer is None or self._shut_down or (conn is not None and conn.state is ConnState.CLOSED):
            raise _err(errno.ENOTCONN, "getpeername")
        if conn is not None and conn.address.path.moved_to is not None:
            return tuple(peer_of(conn.address.peer_addr))  # after a migration, as the kernel's (frame.c)
        return self.peer

    # -- data ----------------------------------------------------------------------------

    def _connection(self, what: str) -> tuple[SimConnection, Endpoint]:
        if self.listener is not None:
            raise _err(errno.EPIPE, what)
        if self.conn is None or self.endpoint is None:
            raise _err(errno.ENOTCONN, what)
        return self.conn, self.endpoint

    def batch(self) -> _Batch:
        """The handshake driver applies what the engine returns (key installs, transport
        parameters, messages) as one batch: setsockopt calls meanwhile do not each try
        to transmit; what they triggered leaves with the batch's last send, or when the
        outermost batch ends (batches nest). The connection state changes at once, as
        without the batch; only the sending and timer bookkeeping after each call is
        merged. An EARLY key install still transmits at once (spec §2.6: the Initial
        leaves ahead of the 0-RTT packets)."""
        return _Batch(self)

    def _hold_output(self, on: bool) -> None:
        if on:
            self._holding += 1
            return
        self._holding -= 1
        if self._holding <= 0:
            self._holding = 0
            if self._held:
                self._held = False
                endpoint = self.endpoint
                if endpoint is not None:
                    with endpoint.lock:
                        endpoint.after_call(self.conn)

    def send_handshake(self, level: int, data: bytes, flags: int = 0) -> int:
        conn, endpoint = self._connection("sendmsg")
        with endpoint.lock:
            try:
                conn.send_crypto(level, data, more=bool(flags & MSG_MORE))
            except SimError as exc:
                raise OSError(exc.errno, exc.strerror) from None
            if not flags & MSG_MORE:
                self._held = False
                endpoint.after_call(conn)
        return len(data)

    def send_stream(self, data: bytes, stream_id: int = -1, stream_flags: int = 0, flags: int = 0) -> int:
        """As the kernel's quic_sendmsg (net/quic/socket.c, spec §1.5): stream -1 is the
        active stream (the last opened, ours or the peer's bidirectional one, until its
        FIN or reset), or with MSG_QUIC_STREAM_NEW the next one; a send blocked by flow
        control or the stream limit waits for credit within the socket's timeout, queuing
        what each grant lets in. Returns the bytes accepted: all of them, or what was in
        when the wait ended (MSG_DONTWAIT or timeout 0: at once); nothing accepted: ENOSPC
        (flow control; the kernel's errno when a stream cmsg is given) or EAGAIN (stream
        limit), as the kernel's quic_wait_for_stream_send answers when SO_SNDTIMEO ends."""
        conn, endpoint = self._connection("sendmsg")
        if flags & L.MSG_QUIC_DATAGRAM:
            return self._send_datagram(conn, endpoint, data)
        timeout = 0.0 if flags & MSG_DONTWAIT else self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        fin = bool(stream_flags & L.MSG_QUIC_STREAM_FIN)
        view = memoryview(data).cast("B")
        with endpoint.lock:
            if conn.state is ConnState.CLOSED:
                raise _closed_err(errno.EPIPE, "sendmsg on a closed connection", conn)
            new, uni = bool(stream_flags & L.MSG_QUIC_STREAM_NEW), bool(stream_flags & L.MSG_QUIC_STREAM_UNI)
            stream_id = _sim(conn.streams.app_send_target, stream_id, new, uni)
            sent, blocked = 0, 0
            while True:
                try:
                    sent += conn.stream_send(stream_id, bytes(view[sent:]), fin=fin)
                except SimError as exc:
                    if exc.errno != errno.EAGAIN:
                        endpoint.after_call(conn)
                        if sent:
                            return sent
                        raise OSError(exc.errno, exc.strerror) from None
                    blocked = errno.EAGAIN if stream_id not in conn.streams.streams else errno.ENOSPC
                if sent == len(view):
                    break
                endpoint.after_call(conn)  # what went in leaves while we wait for more credit
                if timeout == 0.0 or not endpoint.wait_for(lambda: conn.streams.can_write(stream_id)
                                                           or conn.state is ConnState.CLOSED, deadline):
                    break
            endpoint.after_call(conn)
        if sent or not view:
            return sent
        raise _err(blocked or errno.ENOSPC, f"sendmsg on stream {stream_id}")

    def _send_datagram(self, conn: SimConnection, endpoint: Endpoint, data: bytes) -> int:
        """MSG_QUIC_DATAGRAM (RFC 9221): one DATAGRAM frame; EINVAL when the peer takes
        none (its max_datagram_frame_size is 0), EMSGSIZE when empty or over the frame's
        room, as the kernel's datagram send path (socket.c quic_sendmsg)."""
        with endpoint.lock:
            if conn.state is ConnState.CLOSED:
                raise _closed_err(errno.EPIPE, "sendmsg on a closed connection", conn)
            _sim(conn.datagram_send, bytes(data))
            endpoint.after_call(conn)
        return len(data)

    def recv_item(self, bufsize: int, flags: int = 0) -> RecvItem:
        """One item, as the kernel's recvmsg returns: handshake data first, then stream data."""
        conn, endpoint = self._connection("recvmsg")
        timeout = 0.0 if flags & MSG_DONTWAIT else self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        with endpoint.lock:
            if self._held:
                self._held = False
                endpoint.after_call(conn)
            while True:
                crypto = conn.recv_crypto(bufsize)
                if crypto is not None:
                    level, data, eor = crypto
                    return RecvItem(kind=RecvKind.HANDSHAKE, data=data, level=level,
                                    msg_flags=0x80 if eor else 0)
                if conn.events:  # ahead of stream data, as the kernel queues them
                    return RecvItem(kind=RecvKind.EVENT, data=conn.events.pop(0),
                                    msg_flags=L.MSG_QUIC_NOTIFICATION | 0x80)
                datagram = conn.datagrams.read(bufsize) if conn.keys.app_readable else None
                if datagram is not None:
                    data, whole = datagram
                    return RecvItem(kind=RecvKind.DATAGRAM, data=data,
                                    msg_flags=L.MSG_QUIC_DATAGRAM | (0x80 if whole else 0))
                stream = conn.stream_recv(bufsize)
                if stream is not None:
                    if conn.streams.credit_due:
                        conn.streams.credit_due = False
                        endpoint.after_call(conn)
                    stream_id, data, fin = stream
                    return RecvItem(kind=RecvKind.STREAM, data=data, stream_id=stream_id,
                                    stream_flags=L.MSG_QUIC_STREAM_FIN if fin else 0)
                if conn.state is ConnState.CLOSED:
                    raise _closed_err(errno.ENOTCONN, "recvmsg on a closed connection", conn)
                if timeout == 0.0:
                    raise _err(errno.EAGAIN, "recvmsg")
                if not endpoint.wait_for(conn.has_item, deadline):
                    raise TimeoutError("recvmsg timed out")

    # -- socket options (spec §1.4) -------------------------------------------------------

    def setsockopt(self, optname: int, value: bytes | None = None) -> None:
        value = value or b""
        if len(value) > 4096:
            raise _err(errno.EINVAL, "optlen over 4096")
        handler = _SETTERS.get(optname)
        if handler is None:
            raise _err(errno.ENOPROTOOPT, f"setsockopt {optname}")
        if self.endpoint is not None:
            with self.endpoint.lock:
                try:
                    handler(self, value)
                finally:
                    if self._holding and not self._transmit_now:
                        self._held = True
                    else:
                        self._held = self._transmit_now = False
                        self.endpoint.after_call(self.conn)
        else:
            handler(self, value)

    def getsockopt(self, optname: int, arg: int | bytes) -> bytes:
        handler = _GETTERS.get(optname)
        if handler is None:
            raise _err(errno.ENOPROTOOPT, f"getsockopt {optname}")
        buflen = arg if isinstance(arg, int) else len(arg)
        given = b"" if isinstance(arg, int) else bytes(arg)
        if self.endpoint is not None:
            with self.endpoint.lock:
                out = handler(self, given, buflen)
        else:
            out = handler(self, given, buflen)
        return out

    def _need_establishing(self, what: str) -> SimConnection:
        if self.conn is None or self.conn.state is not ConnState.ESTABLISHING:
            raise _err(errno.EINVAL, f"{what} outside ESTABLISHING")
        return self.conn

    # setters
    def _set_crypto_secret(self, value: bytes) -> None:
        conn = self._need_establishing("CRYPTO_SECRET")
        s = abi.unpack_crypto_secret(value)
        # Only secretlen(type) bytes count (spec §1.4); the connection rejects a bad type.
        length = abi.CIPHER_SECRET_LEN.get(s.cipher_type, len(s.secret))
        if s.level == EARLY:
            self._transmit_now = True  # even inside batch()
        _sim(conn.install_secret, s.level, bool(s.send), s.cipher_type, s.secret[:length])

    def _set_tp_ext(self, value: bytes) -> None:
        conn = self._need_establishing("TRANSPORT_PARAM_EXT")
        if len(value) > 512:
            raise _err(errno.EINVAL, "TRANSPORT_PARAM_EXT over 512 bytes")
        _sim(conn.set_peer_transport_params_blob, value)

    def _set_transport_param(self, value: bytes) -> None:
        fields = abi.unpack_transport_param(value)
        remote = bool(fields.pop("remote", 0))
        if self.conn is not None:
            state = self.conn.state
            if state is ConnState.ESTABLISHED or (remote and state is not ConnState.ESTABLISHING):
                raise _err(errno.EINVAL, "TRANSPORT_PARAM")
            _sim(self.conn.set_transport_param, fields, remote)
            return
        if remote:
            raise _err(errno.EINVAL, "remote TRANSPORT_PARAM before connect")
        self.local_params.update({k: v for k, v in fields.items() if v})

    def _set_config(self, value: bytes) -> None:
        if self.conn is not None and self.conn.state is ConnState.ESTABLISHED:
            raise _err(errno.EINVAL, "CONFIG after the handshake")
        fields = abi.unpack_config(value)
        cipher = fields.get("payload_cipher_type", 0)
        if cipher and cipher not in abi.CIPHER_SECRET_LEN:
            raise _err(errno.EINVAL, "payload_cipher_type")
        interval = fields.get("plpmtud_probe_interval", 0)
        if isinstance(interval, int):
            check_probe_interval(interval)  # EINVAL as the kernel's
        self.config.update({k: v for k, v in fields.items() if isinstance(v, int) and v})

    def _set_alpn(self, value: bytes) -> None:
        if not 0 < len(value) <= 128:
            raise _err(errno.EINVAL, "ALPN length")
        if self.listener is not None:
            raise _err(errno.EINVAL, "ALPN on a listening socket")
        items = [item.lstrip(b" ") for item in value.split(b",")]
        if any(len(i) > 255 for i in items):
            raise _err(errno.EINVAL, "ALPN item over 255 bytes")
        self.alpn = b",".join(items)

    def _set_session_ticket(self, value: bytes) -> None:
        if not 64 <= len(value) <= 4096:
            raise _err(errno.EINVAL, "SESSION_TICKET length")
        conn = self.conn
        if conn is not None and conn.is_client and conn.state is not ConnState.ESTABLISHING:
            # One buffer in the kernel: after the handshake a set replaces the captured
            # ticket (tlshd stores the consumer's session data this way, spec §2.6).
            conn.replace_ticket(value)
            return
        self.ticket_blob = value

    def _set_token(self, value: bytes) -> None:
        """Server: send a NEW_TOKEN (value ignored); client: 1..120 bytes for the next
        Initials (spec §1.4)."""
        conn = self.conn
        if self.listener is not None:
            raise _err(errno.EINVAL, "TOKEN on a listener")
        if conn is not None and not conn.is_client:
            _sim(conn.send_new_token)
            return
        if not 0 < len(value) <= 120:
            raise _err(errno.EINVAL, "TOKEN length")
        self.token = value
        if conn is not None:
            conn.set_token(value)

    def _set_key_update(self, value: bytes) -> None:
        """Start a 1-RTT key update (RFC 9001 §6.1): EPIPE unless established, EINVAL while
        the last one (ours or the peer's) is pending (socket.c quic_sock_key_update)."""
        conn = self.conn
        if conn is None or self.listener is not None or conn.state is not ConnState.ESTABLISHED:
            raise _err(errno.EPIPE, "KEY_UPDATE outside ESTABLISHED")
        _sim(conn.key_update)

    def _set_migration(self, value: bytes) -> None:
        """QUIC_SOCKOPT_CONNECTION_MIGRATION (socket.c quic_sock_connection_migrate): a
        server's preferred address while ESTABLISHING (any family), else a move to a new
        local address of the same family (path.py)."""
        addr = unpack_sockaddr(value)
        if not addr[1]:
            raise _err(errno.EINVAL, "CONNECTION_MIGRATION to port 0")
        conn, endpoint = self.conn, self.endpoint
        if self.listener is not None or conn is None or endpoint is None or conn.state is ConnState.CLOSED:
            raise _err(errno.EPIPE, "CONNECTION_MIGRATION on a closed or listening socket")
        current = self.getsockname()
        if _same_address(current, addr):
            raise _err(errno.EINVAL, "CONNECTION_MIGRATION to the address in use")
        if conn.state is ConnState.ESTABLISHING:
            _sim(conn.set_preferred_address, addr)  # EINVAL first, as the kernel checks
            try:
                # Bound now (the kernel binds it when the handshake completes): the client
                # may come at any time after that.
                conn.set_preferred_address(endpoint.bind_path(conn, addr))
            except OSError:
                conn.address.path.preferred_local = None  # nothing advertised
                raise
            return
        if len(addr) != len(current):
            raise _err(errno.EINVAL, "CONNECTION_MIGRATION to another address family")
        if conn.address.path.busy:
            raise _err(errno.EAGAIN, "a migration is in progress")
        bound = endpoint.bind_path(conn, addr)
        _sim(conn.migrate, Route(peer_of(conn.address.peer_addr), bound), time.time())

    def _set_close(self, value: bytes) -> None:
        info = abi.unpack_connection_close(value)
        self.close_request = (info.errcode, info.phrase[:63])

    def _set_event(self, value: bytes) -> None:
        event_type, on = (value + b"\0\0")[0], (value + b"\0\0")[1]
        if not 1 <= event_type <= 9:
            raise _err(errno.EINVAL, "event type")
        self.events = self.events | (1 << event_type) if on else self.events & ~(1 << event_type)
        if self.conn is not None:
            self.conn.event_mask = self.events  # NEW_TOKEN and KEY_UPDATE events are simulated

    # getters
    def _get_tp_ext(self, given: bytes, buflen: int) -> bytes:
        conn = self._need_establishing("TRANSPORT_PARAM_EXT")
        blob = _sim(conn.local_transport_params_blob)
        if buflen < len(blob):
            raise _err(errno.EINVAL, "buffer smaller than the transport parameters")
        return blob

    def _get_transport_param(self, given: bytes, buflen: int) -> bytes:
        remote = bool(given[:1] == b"\x01")
        fields = dict(self.local_params) if self.conn is None else self.conn.get_transport_param(remote)
        return abi.pack_transport_param(remote=int(remote), **fields)[:buflen]

    def _get_config(self, given: bytes, buflen: int) -> bytes:
        return abi.pack_config(**self.config)[:buflen]

    def _get_alpn(self, given: bytes, buflen: int) -> bytes:
        if self.alpn and buflen < len(self.alpn) + 1:
            raise _err(errno.EINVAL, "ALPN buffer too small")
        return self.alpn

    def _get_session_ticket(self, given: bytes, buflen: int) -> bytes:
        if self.listener is not None:
            raise _err(errno.EPIPE, "SESSION_TICKET on a listener")
        conn = self.conn
        if conn is not None and conn.is_client and conn.state is not ConnState.ESTABLISHING:
            blob = conn.session_ticket()
        elif conn is not None and not conn.is_client:
            if conn.state is ConnState.CLOSED:
                raise _err(errno.EPIPE, "SESSION_TICKET on a closed socket")
            blob = self.ticket_blob or self._server_ticket_key()
        else:
            blob = self.ticket_blob
        if buflen < len(blob):
            raise _err(errno.EINVAL, "SESSION_TICKET buffer too small")
        return blob

    def _server_ticket_key(self) -> bytes:
        """64 bytes from the listener's secret and the client's IP address (port left
        out), so tickets from one connection open on the next (spec §1.4)."""
        host = str(self.peer[0]) if self.peer else ""
        prk = hmac.digest(host.encode(), self._listener_secret, hashlib.sha256)
        first = hmac.digest(prk, b"session_ticket\x01", hashlib.sha256)
        return first + hmac.digest(prk, first + b"session_ticket\x02", hashlib.sha256)

    def _get_token(self, given: bytes, buflen: int) -> bytes:
        """Client: the one token buffer (what was set, a Retry's token, then the last
        NEW_TOKEN's); server: always EINVAL (libquic's role test, spec §1.4)."""
        if self.listener is not None or (self.conn is not None and not self.conn.is_client):
            raise _err(errno.EINVAL, "TOKEN on a server socket")
        token = self.conn.token if self.conn is not None else self.token
        if buflen < len(token):
            raise _err(errno.EINVAL, "TOKEN buffer too small")
        return token

    def _get_close(self, given: bytes, buflen: int) -> bytes:
        info = self.conn.close_info if self.conn is not None else None
        if info is not None:
            errcode, frame, phrase = info
        else:
            (errcode, phrase), frame = self.close_request, 0
        return abi.pack_connection_close(errcode, phrase[:63], frame & 0xFF)[:buflen]

    def _get_event(self, given: bytes, buflen: int) -> bytes:
        event_type = given[0] if given else 0
        if not 1 <= event_type <= 9:
            raise _err(errno.EINVAL, "event type")
        return abi.pack_event_option(event_type, bool(self.events & (1 << event_type)))

    def _get_crypto_secret(self, given: bytes, buflen: int) -> bytes:
        raise _err(errno.ENOPROTOOPT, "CRYPTO_SECRET is set-only")


def _sim(fn: Callable[..., _T], *args: Any) -> _T:
    """fn(*args), a SimError turned into the OSError the kernel's call raises."""
    try:
        return fn(*args)
    except SimError as exc:
        raise OSError(exc.errno, exc.strerror) from None


def _same_address(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """The same IP address and port, whatever the tuple's length."""
    try:
        ip_a, ip_b = ipaddress.ip_address(a[0]), ipaddress.ip_address(b[0])
    except ValueError:
        return tuple(a[:2]) == tuple(b[:2])
    return ip_a == ip_b and a[1] == b[1]


def _resolve(family: int, address: tuple[Any, ...]) -> tuple[Any, ...]:
    host, port = address[0], address[1]
    numeric = _numeric_address(family, host, port)
    if numeric is not None:
        return numeric
    info = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    return info[0][4]


def _numeric_address(family: int, host: Any, port: Any) -> tuple[Any, ...] | None:
    """What getaddrinfo() answers for a literal address and port number, without the
    resolver; None for anything else (names, service names, scoped IPv6)."""
    if type(port) is not int or not 0 <= port <= 0xFFFF or type(host) is not str:
        return None
    if family not in (socket.AF_INET, socket.AF_INET6) or "%" in host:
        return None
    try:
        canonical = socket.inet_ntop(family, socket.inet_pton(family, host))
    except OSError:
        return None
    return (canonical, port) if family == socket.AF_INET else (canonical, port, 0, 0)


_SETTERS = {
    L.QUIC_SOCKOPT_CRYPTO_SECRET: SimQuicSocket._set_crypto_secret,
    L.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT: SimQuicSocket._set_tp_ext,
    L.QUIC_SOCKOPT_TRANSPORT_PARAM: SimQuicSocket._set_transport_param,
    L.QUIC_SOCKOPT_CONFIG: SimQuicSocket._set_config,
    L.QUIC_SOCKOPT_ALPN: SimQuicSocket._set_alpn,
    L.QUIC_SOCKOPT_SESSION_TICKET: SimQuicSocket._set_session_ticket,
    L.QUIC_SOCKOPT_TOKEN: SimQuicSocket._set_token,
    L.QUIC_SOCKOPT_CONNECTION_CLOSE: SimQuicSocket._set_close,
    L.QUIC_SOCKOPT_EVENT: SimQuicSocket._set_event,
    L.QUIC_SOCKOPT_KEY_UPDATE: SimQuicSocket._set_key_update,
    L.QUIC_SOCKOPT_CONNECTION_MIGRATION: SimQuicSocket._set_migration,
}
_GETTERS = {
    L.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT: SimQuicSocket._get_tp_ext,
    L.QUIC_SOCKOPT_TRANSPORT_PARAM: SimQuicSocket._get_transport_param,
    L.QUIC_SOCKOPT_CONFIG: SimQuicSocket._get_config,
    L.QUIC_SOCKOPT_ALPN: SimQuicSocket._get_alpn,
    L.QUIC_SOCKOPT_SESSION_TICKET: SimQuicSocket._get_session_ticket,
    L.QUIC_SOCKOPT_TOKEN: SimQuicSocket._get_token,
    L.QUIC_SOCKOPT_CONNECTION_CLOSE: SimQuicSocket._get_close,
    L.QUIC_SOCKOPT_EVENT: SimQuicSocket._get_event,
}
