"""An endpoint's UDP sockets at local addresses other than its own: where a connection
migrates to (QUIC_SOCKOPT_CONNECTION_MIGRATION) or a server's preferred address (RFC 9000
§9.6), as the kernel binds a UDP socket per path (path.c quic_path_bind). Connections name
such a path with path.Route; the endpoint reads these sockets with its own and sends through
them."""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
from typing import TYPE_CHECKING, Any

from .path import Route
from .udp_io import UdpIO

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["LocalPaths"]

log = logging.getLogger(__name__)

Address = tuple[Any, ...]
MAX_READS = 64


class LocalPaths:
    __slots__ = ("_endpoint", "_poller", "sockets", "_io", "_users", "_epoll")

    def __init__(self, endpoint: Endpoint, poller: Any) -> None:
        self._endpoint = endpoint
        self._poller = poller  # the endpoint's leader poll set
        self.sockets: dict[Address, socket.socket] = {}  # by the bound address
        self._io: dict[Address, UdpIO] = {}  # batched I/O on each, as the endpoint's own
        self._users: dict[Any, set[Address]] = {}  # connection -> addresses it holds
        self._epoll: Any = None  # once there are other sockets: the reactor's one fd for all

    def watch_fd(self) -> int:
        return self._epoll.fileno() if self._epoll is not None else self._endpoint.udp.fileno()

    def bind(self, conn: Any, local: Address) -> tuple[Address, bool]:
        """A socket at `local` for `conn` (shared with other connections of the endpoint at
        the same address): (its bound address, whether it is new). OSError as bind()
        raises it (EADDRINUSE for an address another endpoint has)."""
        for bound, _ in self.sockets.items():
            if tuple(bound[:2]) == tuple(local[:2]):
                self._users.setdefault(conn, set()).add(bound)
                return bound, False
        family = socket.AF_INET6 if ipaddress.ip_address(local[0]).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(local)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        bound = sock.getsockname()
        self.sockets[bound] = sock
        self._io[bound] = UdpIO(sock)
        self._users.setdefault(conn, set()).add(bound)
        self._poller.register(sock.fileno(), select.POLLIN)
        if self._epoll is None:
            self._epoll = select.epoll()
            self._epoll.register(self._endpoint.udp.fileno(), select.EPOLLIN)
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        return bound, True

    def release(self, conn: Any) -> None:
        """`conn` is gone: close the sockets no other connection holds."""
        held = self._users.pop(conn, set())
        still = set().union(*self._users.values()) if self._users else set()
        for bound in held - still:
            self._close_one(bound)

    def _close_one(self, bound: Address) -> None:
        sock = self.sockets.pop(bound)
        del self._io[bound]
        with contextlib.suppress(KeyError, OSError, ValueError):
            self._poller.unregister(sock.fileno())
        if self._epoll is not None:
            with contextlib.suppress(KeyError, OSError, ValueError):
                self._epoll.unregister(sock.fileno())
        sock.close()

    def close(self) -> None:
        for bound in list(self.sockets):
            self._close_one(bound)
        self._users.clear()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def send_routed(self, datagrams: list[tuple[bytes, Any]]) -> list[tuple[bytes, Any]]:
        """Send the datagrams of paths through these sockets; the others are returned."""
        rest = []
        routed: dict[Address, list[tuple[bytes, Any]]] = {}
        for data, addr in datagrams:
            if type(addr) is Route:
                routed.setdefault(addr.local, []).append((data, addr.peer))
            else:
                rest.append((data, addr))
        for local, out in routed.items():
            io = self._io.get(local)
            if io is not None:  # else closed meanwhile: lost as on UDP
                io.send(out)
        return rest

    def read(self, now: float, lag: float) -> None:
        """What arrived at the other addresses, each datagram marked with its path."""
        for bound, io in list(self._io.items()):
            read = 0
            while read < MAX_READS:
                try:
                    datagrams, addr = io.receive()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # ICMP errors surface here on Linux
                    log.debug("recvfrom at %s: %s", bound, exc)
                    read += 1
                    continue
                read += len(datagrams)
                route = Route(addr, bound)
                for data in datagrams:
                    try:
                        self._endpoint.deliver_on_path(data, route, now, lag)
                    except Exception:  # a datagram must not take the simulated kernel down
                        log.exception("simulation endpoint: a datagram at %s from %s failed", bound, addr)
