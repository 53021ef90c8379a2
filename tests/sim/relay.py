"""An impairing UDP relay for transfer tests on loopback (this machine's kernel has no netem).

One client talks to the relay's address as if it were the server; the relay forwards to the
real server from its own upstream socket and sends the answers back to the client's latest
address. Each direction applies, in this order: a blackhole window (everything dropped),
a size limit (larger datagrams dropped: a smaller path MTU), random loss, a fixed delay,
reordering (a fraction held back by an extra delay) and duplication. Random choices come
from one seeded generator per direction, so a run is repeatable up to the timing of the
packets themselves. One thread runs a selector and a heap of due packets: no sleeps.
"""
from __future__ import annotations

import heapq
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Impairment", "Counters", "ImpairingRelay"]

Address = tuple[str, int]


@dataclass(frozen=True)
class Impairment:
    """What one direction suffers. Probabilities in [0, 1], times in seconds.

    `blackhole_after`: once this many datagrams went through, everything is dropped for
    `blackhole_for` seconds (0: never); ImpairingRelay.blackhole() starts one at any time."""

    loss: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0  # fraction of datagrams held back ...
    reorder_extra: float = 0.010  # ... by this much more than `delay`
    duplicate: float = 0.0
    blackhole_after: int = 0
    blackhole_for: float = 0.0
    max_size: int = 0  # datagrams above this are dropped, as by a smaller path MTU (0: none)


@dataclass
class Counters:
    received: int = 0
    forwarded: int = 0  # copies sent on, duplicates included
    lost: int = 0
    blackholed: int = 0
    too_big: int = 0
    reordered: int = 0
    duplicated: int = 0


@dataclass
class _Direction:
    impairment: Impairment
    rng: random.Random
    counters: Counters = field(default_factory=Counters)
    blackhole_until: float = 0.0
    blackhole_armed: bool = True


class ImpairingRelay:
    """`address` is where the client connects; `to_server`/`to_client` impair each way."""

    def __init__(self, server: Address, *, to_server: Impairment | None = None,
                 to_client: Impairment | None = None, seed: int = 1, rebind_after: int = 0,
                 spoof_at: int = 0) -> None:
        """`rebind_after`: once this many datagrams went to the server, the relay forwards
        from a new upstream port, as a NAT that rebinds (the old port is dropped, unread).
        `spoof_at`: that datagram to the server is first sent from another socket too, a
        spoofed source address that never answers (RFC 9000 §9.3.2)."""
        self.server = server
        self.rebind_after = rebind_after
        self.spoof_at = spoof_at
        self._spoofer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._spoofer.bind(("127.0.0.1", 0))
        self.spoofed_from: Address = self._spoofer.getsockname()
        self.spoofed_size = 0  # the size of the datagram sent from there
        self._retired: list[socket.socket] = []  # upstream sockets left by a rebinding
        self._down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # faces the client
        self._down.bind(("127.0.0.1", 0))
        self._up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # faces the server
        self._up.bind(("127.0.0.1", 0))
        for sock in (self._down, self._up):
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.address: Address = self._down.getsockname()
        self.client: Address | None = None
        self.directions = {
            "to_server": _Direction(to_server or Impairment(), random.Random(f"{seed}/to_server")),
            "to_client": _Direction(to_client or Impairment(), random.Random(f"{seed}/to_client")),
        }
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when a counter moves
        self._due: list[tuple[float, int, str, bytes]] = []  # (when, seq, direction, datagram)
        self._seq = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="impairing-relay", daemon=True)

    # ---- the test's side ----------------------------------------------------------------------

    def start(self) -> ImpairingRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        self._wake_w.send(b"x")
        self._thread.join(5)
        for sock in (self._down, self._up, self._wake_r, self._wake_w, self._spoofer, *self._retired):
            sock.close()

    def __enter__(self) -> ImpairingRelay:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def counters(self, direction: str) -> Counters:
        with self._lock:
            c = self.directions[direction].counters
            return Counters(**vars(c))

    def wait_for(self, direction: str, ready: Callable[[Counters], bool], timeout: float = 5.0) -> Counters:
        """The counters of `direction` once ready(counters) holds (TimeoutError if not
        within `timeout`)."""
        with self._changed:
            c = self.directions[direction].counters
            if not self._changed.wait_for(lambda: ready(c), timeout):
                raise TimeoutError(f"relay {direction}: {c}")
            return Counters(**vars(c))

    def blackhole(self, seconds: float, direction: str | None = None) -> None:
        """Drop everything (one way, or both) for `seconds` from now."""
        until = time.monotonic() + seconds
        with self._lock:
            for name, d in self.directions.items():
                if direction in (None, name):
                    d.blackhole_until = until

    # ---- the relay's thread -------------------------------------------------------------------

    def spoofer_received(self, wait: float = 0.0) -> list[bytes]:
        """What the server sent to the spoofed address: read once, waiting up to `wait`
        seconds for the first datagram (a loaded machine may run the transfer to its end
        before the server's probe has been read here)."""
        got = []
        if wait > 0:
            self._spoofer.settimeout(wait)
            try:
                got.append(self._spoofer.recv(65536))
            except TimeoutError:
                return got
        self._spoofer.setblocking(False)
        while True:
            try:
                got.append(self._spoofer.recv(65536))
            except (BlockingIOError, InterruptedError):
                return got

    def rebind_now(self) -> None:
        """A NAT rebinding at the client's next datagram."""
        self.rebind_after = 1

    def upstream_address(self) -> Address:
        """Where the server sees the client now (it changes at a rebinding)."""
        with self._lock:
            return self._up.getsockname()

    def _rebind(self) -> None:
        """The NAT's new mapping, made by the client's next datagram: the old one is gone."""
        sel = self._sel
        sel.unregister(self._up)
        fresh = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fresh.bind(("127.0.0.1", 0))
        fresh.setblocking(False)
        with self._lock:
            self._retired.append(self._up)
            self._up = fresh
        sel.register(fresh, selectors.EVENT_READ, "to_client")

    def _run(self) -> None:
        sel = self._sel = selectors.DefaultSelector()
        sel.register(self._down, selectors.EVENT_READ, "to_server")
        sel.register(self._up, selectors.EVENT_READ, "to_client")
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stop:
                timeout = None
                if self._due:
                    timeout = max(0.0, self._due[0][0] - time.monotonic())
                for key, _ in sel.select(timeout):
                    if key.data is None:
                        self._wake_r.recv(64)
                    else:
                        self._drain(key.fileobj, key.data)  # type: ignore[arg-type]
                self._send_due(time.monotonic())
        finally:
            sel.close()

    def _drain(self, sock: socket.socket, direction: str) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error from an earlier send (peer gone): not ours to judge
            if direction == "to_server":
                self.client = addr
            self._impair(direction, data, time.monotonic())

    def _impair(self, direction: str, data: bytes, now: float) -> None:
        with self._lock:
            d = self.directions[direction]
            imp, rng, c = d.impairment, d.rng, d.counters
            c.received += 1
            self._changed.notify_all()
            if d.blackhole_armed and imp.blackhole_for and c.received > imp.blackhole_after:
                d.blackhole_armed = False
                d.blackhole_until = now + imp.blackhole_for
            if now < d.blackhole_until:
                c.blackholed += 1
                return
            if imp.max_size and len(data) > imp.max_size:
                c.too_big += 1
                return
            if imp.loss and rng.random() < imp.loss:
                c.lost += 1
                return
            when = now + imp.delay
            if imp.reorder and rng.random() < imp.reorder:
                c.reordered += 1
                when += imp.reorder_extra
            copies = 1
            if imp.duplicate and rng.random() < imp.duplicate:
                c.duplicated += 1
                copies = 2
        for _ in range(copies):
            if when <= now and not self._due:
                self._send(direction, data)
            else:
                self._seq += 1
                heapq.heappush(self._due, (when, self._seq, direction, data))

    def _send_due(self, now: float) -> None:
        due = self._due
        while due and due[0][0] <= now:
            _, _, direction, data = heapq.heappop(due)
            self._send(direction, data)

    def _send(self, direction: str, data: bytes) -> None:
        if direction == "to_server":
            if self.rebind_after and self.counters("to_server").forwarded >= self.rebind_after:
                self.rebind_after = 0
                self._rebind()
            sock, dest = self._up, self.server
            if self.spoof_at and self.counters("to_server").forwarded + 1 == self.spoof_at:
                self._spoofer.sendto(data, dest)  # the copy from elsewhere arrives first
                self.spoofed_size = len(data)
        else:
            if self.client is None:
                return
            sock, dest = self._down, self.client
        try:
            sock.sendto(data, dest)
        except (BlockingIOError, InterruptedError):
            return  # a full socket buffer drops it, as a router queue would
        except OSError:
            return  # nobody listens there (yet or any more)
        with self._lock:
            self.directions[direction].counters.forwarded += 1
            self._changed.notify_all()
