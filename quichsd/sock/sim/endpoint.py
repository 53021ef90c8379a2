"""A UDP endpoint of the simulation: one UDP socket, one I/O thread, many connections.

The thread plays the kernel's part: it reads datagrams, demultiplexes them by connection
ID (a new client Initial goes to a listener, chosen by the ClientHello's ALPN as the
kernel does, spec §2.7), runs timers and sends what connections queue. Application threads
call into connections under the endpoint's lock and wake the thread to flush.
"""
from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .connection import SimConnection
from .listener_peek import ClientHelloRejected, packet_dcid, parse_initial_header, peek_client_hello_alpn

log = logging.getLogger(__name__)

Address = tuple[Any, ...]
SHORT_HEADER_CID_LEN = 8  # the CIDs we issue are 8 bytes, as the kernel's


class Listener:
    """A listening socket's registration on an endpoint."""

    def __init__(self, alpns: list[bytes], backlog: int, make_connection: Callable[..., SimConnection]) -> None:
        self.alpns = alpns
        self.backlog = backlog
        self.make_connection = make_connection
        self.pending: deque[SimConnection] = deque()
        self.secret = os.urandom(32)  # the listener's token/ticket secret (spec §1.4)


class Endpoint:
    def __init__(self, family: int, local: Address | None = None) -> None:
        self.family = family
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            self.udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.udp.bind(local if local is not None else ("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        self.udp.setblocking(False)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.connections: dict[bytes, SimConnection] = {}
        self.listeners: list[Listener] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._users = 0
        self._thread = threading.Thread(target=self._run, name=f"quic-sim {self.local_address}", daemon=True)
        self._thread.start()

    @property
    def local_address(self) -> Address:
        return self.udp.getsockname()

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
        self.wake()

    def _register(self, conn: SimConnection) -> None:
        """Map every CID the peer may address `conn` with (they change as it issues
        NEW_CONNECTION_IDs and retires old ones)."""
        for cid in conn.local_cids():
            self.connections[cid] = conn

    def remove_connection(self, conn: SimConnection) -> None:
        with self.lock:
            for cid in [c for c, v in self.connections.items() if v is conn]:
                del self.connections[cid]

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

    # -- the I/O thread --------------------------------------------------------------------

    def wake(self) -> None:
        if self._closed:
            return
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):  # full pipe, or closed under us by the thread
            pass

    def shutdown(self) -> None:
        with self.lock:
            if self._closed:
                return
            self._closed = True
        # The I/O thread sends the last CONNECTION_CLOSEs and closes the UDP socket on its
        # way out; nobody needs to wait for that.
        self.wake()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.udp, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while True:
                with self.lock:
                    if self._closed:
                        self._flush_all(time.time())  # last CONNECTION_CLOSEs
                        break
                    timeout = self._next_timeout()
                for key, _ in selector.select(timeout):
                    if key.fileobj is self.udp:
                        self._read_datagrams()
                    else:
                        try:
                            while os.read(self._wake_r, 512):
                                pass
                        except BlockingIOError:
                            pass
                now = time.time()
                with self.lock:
                    for conn in set(self.connections.values()):
                        timer = conn.get_timer()
                        if timer is not None and timer <= now:
                            conn.handle_timer(now)
                    self._flush_all(now)
                    for conn in set(self.connections.values()):
                        self._register(conn)
                    self.changed.notify_all()
        except Exception:  # the simulated kernel must not die silently
            log.exception("simulation endpoint thread failed")
        finally:
            selector.close()
            self.udp.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _next_timeout(self) -> float | None:
        timers = [t for t in (c.get_timer() for c in self.connections.values()) if t is not None]
        if not timers:
            return None
        return max(0.0, min(timers) - time.time())

    def _flush_all(self, now: float) -> None:
        for conn in set(self.connections.values()):
            for data, addr in conn.datagrams_to_send(now):
                try:
                    self.udp.sendto(data, addr)
                except OSError as exc:  # as UDP does: the loss shows up as a retransmission
                    log.debug("sendto %s: %s", addr, exc)

    def _read_datagrams(self) -> None:
        for _ in range(64):
            try:
                data, addr = self.udp.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors surface here on Linux
                log.debug("recvfrom: %s", exc)
                continue
            now = time.time()
            with self.lock:
                self._deliver(data, addr, now)

    def _deliver(self, data: bytes, addr: Address, now: float) -> None:
        dcid = packet_dcid(data, SHORT_HEADER_CID_LEN)
        if dcid is None:
            return
        conn = self.connections.get(dcid)
        if conn is None:
            conn = self._new_server_connection(data, addr, now)
            if conn is None:
                return
        conn.receive_datagram(data, addr, now)

    def _new_server_connection(self, data: bytes, addr: Address, now: float) -> SimConnection | None:
        """A client Initial for no known connection: pick the listener (spec §2.7)."""
        if not self.listeners:
            return None
        header = parse_initial_header(data)
        if header is None:
            return None
        version, dcid, scid, token = header
        try:
            alpns = peek_client_hello_alpn(data)
        except ClientHelloRejected as exc:  # the kernel drops these too (spec §2.7)
            log.debug("dropping an Initial from %s: %s", addr, exc)
            return None
        listener = self._pick_listener(alpns)
        if listener is None or len(listener.pending) >= max(1, listener.backlog):
            return None
        conn = listener.make_connection(version=version, original_dcid=dcid, peer_cid=scid, peer_addr=addr,
                                        token=token, now=now, listener=listener)
        self._register(conn)  # includes the client's first DCID, used until it learns ours
        listener.pending.append(conn)
        self.changed.notify_all()
        return conn

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
