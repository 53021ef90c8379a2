"""The simulation's background thread: one per process, for every endpoint.

It does the kernel's work for an endpoint while no application thread is blocked on it
(endpoint.py): datagrams that arrive between socket calls, timers (ACK delay, loss
detection, PTO, idle timeout), a listener's new connections. An application thread that
blocks in recvmsg or accept takes its endpoint away from the reactor for that time
(`detach`) and gives it back (`attach`) with its next timer.

The reactor sleeps until the earliest timer of the endpoints it watches; it is woken
(`_poke`) only when a socket call makes a timer earlier than that.
"""
from __future__ import annotations

import logging
import os
import selectors
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .endpoint import Endpoint

log = logging.getLogger(__name__)

__all__ = ["Reactor", "reactor"]


class Reactor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._endpoints: set[Endpoint] = set()
        # When the loop wakes next (time.time() clock; None: no timer). While it works
        # (`_busy`) a change needs no poke: it marks the loop `_dirty`, and the loop
        # computes its deadline again before it sleeps.
        self._deadline: float | None = None
        self._busy = True
        self._dirty = False
        self._thread: threading.Thread | None = None

    # -- called by endpoints, with their lock held -------------------------------------------

    def attach(self, endpoint: Endpoint, timer: float | None) -> None:
        with self._lock:
            if endpoint in self._endpoints:
                poke = self._earlier(timer)
            else:
                self._endpoints.add(endpoint)
                self._selector.register(endpoint.udp, selectors.EVENT_READ, endpoint)
                poke = self._earlier(timer)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="quic-sim reactor", daemon=True)
                    self._thread.start()
        if poke:
            self._poke()

    def detach(self, endpoint: Endpoint) -> None:
        with self._lock:
            if endpoint in self._endpoints:
                self._endpoints.discard(endpoint)
                self._selector.unregister(endpoint.udp)

    def reschedule(self, endpoint: Endpoint, timer: float | None) -> None:
        """`endpoint`'s earliest timer is now `timer`."""
        with self._lock:
            poke = endpoint in self._endpoints and self._earlier(timer)
        if poke:
            self._poke()

    def _earlier(self, timer: float | None) -> bool:
        """Does the loop need a poke to wake by `timer`? (reactor lock held)"""
        if timer is None:
            return False
        if self._busy:
            self._dirty = True
            return False
        return self._deadline is None or timer < self._deadline

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):  # a full pipe wakes the loop as well
            pass

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                self._turn()
            except Exception:  # the simulated kernel must not die silently
                log.exception("simulation reactor: a turn failed")
                time.sleep(0.01)

    def _turn(self) -> None:
        endpoints, deadline = self._plan()
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        events = self._selector.select(timeout)
        with self._lock:
            self._busy = True
        readable: set[Endpoint] = set()
        for key, _ in events:
            if key.data is None:
                self._drain()
            else:
                readable.add(key.data)
        now = time.time()
        for endpoint in set(endpoints) | readable:
            endpoint.background_step(now, endpoint in readable)

    def _plan(self) -> tuple[list[Endpoint], float | None]:
        """The endpoints to watch and the earliest of their timers; the loop is not
        busy any more when this returns."""
        while True:
            with self._lock:
                self._busy = True
                self._dirty = False
                endpoints = list(self._endpoints)
            deadline: float | None = None
            for endpoint in endpoints:
                with endpoint.lock:
                    timer = endpoint.next_timer()
                if timer is not None and (deadline is None or timer < deadline):
                    deadline = timer
            with self._lock:
                if self._dirty:
                    continue  # a timer changed under us: look again
                self._deadline = deadline
                self._busy = False
                return endpoints, deadline

    def _drain(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except (BlockingIOError, OSError):
            pass


_reactor: Reactor | None = None
_reactor_lock = threading.Lock()


def reactor() -> Reactor:
    global _reactor
    current = _reactor
    if current is None:
        with _reactor_lock:
            if _reactor is None:
                _reactor = Reactor()
            current = _reactor
    return current


def _forget_after_fork() -> None:
    """A forked child has no reactor thread: it starts its own when it needs one."""
    global _reactor, _reactor_lock
    _reactor = None
    _reactor_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
