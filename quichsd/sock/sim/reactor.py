"""The simulation's background thread: one per process, for every endpoint.

It does the kernel's work for an endpoint while no application thread is blocked on it
(endpoint.py): datagrams that arrive between socket calls, timers (ACK delay, loss
detection, PTO, idle timeout), a listener's new connections, and the connections' idle
work (Endpoint._idle_work) that no blocked thread did. An application thread that
blocks in recvmsg or accept takes its endpoint away from the reactor for that time
(`detach`) and gives it back (`attach`) with its next timer.

The reactor keeps every attached endpoint's earliest timer, and sleeps until the earliest
of them. On Linux that sleep is a timerfd that socket calls re-arm (one syscall, and the
reactor thread is not woken): the thread runs only when a timer is really due or a
datagram arrives while nobody else reads it, so it does not compete with the
application's threads for the GIL in the middle of a handshake. Elsewhere a pipe wakes
the thread when a timer becomes earlier than the one it sleeps for.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .endpoint import Endpoint

log = logging.getLogger(__name__)

__all__ = ["Reactor", "reactor"]

# A timer that moves later is re-armed only if the armed one is this near.
LATER_REARM = 0.05


class _TimerFd:
    """A CLOCK_REALTIME timerfd, armed at absolute times (Linux; csrc/timerfd.c)."""

    def __init__(self) -> None:
        from ..._sysabi import lib

        self._arm = lib.quichsd_timerfd_arm
        fd = lib.quichsd_timerfd_create()
        if fd < 0:
            raise OSError(-fd, os.strerror(-fd))
        self.fd = fd

    def arm(self, when: float | None) -> None:
        """Expire at `when` (time.time() clock; rounded up so the thread never wakes
        before the timer is due), or never."""
        if when is None:
            sec = nsec = 0
        else:
            sec, nsec = divmod(max(math.ceil(when * 1e9), 1), 1_000_000_000)
        rc = self._arm(self.fd, sec, nsec)
        if rc < 0:
            raise OSError(-rc, f"timerfd_settime: {os.strerror(-rc)}")

    def clear(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError included: nothing to clear
            os.read(self.fd, 8)


def _timerfd() -> _TimerFd | None:
    try:
        return _TimerFd()
    except (OSError, ImportError, AttributeError):  # not Linux: the pipe does it
        return None


# How long an endpoint that an application thread stopped leading stays unwatched for
# datagrams: a thread that answers what it read (the TLS agent) is usually back in a socket
# call before then and reads them itself, so the reactor thread does not wake up and
# compete for the GIL in the middle of a handshake. What arrives meanwhile waits at most
# this long; the connections count that wait against their ACK deadlines (`lag`), so the
# ACK bounds stay what they are (RFC 9000 §13.2.1).
WATCH_GRACE = 0.002


class Reactor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._poll = self._epoll if self._epoll is not None else select.poll()
        self._timerfd = _timerfd() if self._epoll is not None else None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poll.register(self._wake_r, select.POLLIN)
        if self._timerfd is not None:
            self._poll.register(self._timerfd.fd, select.POLLIN)
        # Attached endpoints: their earliest timers, and when their UDP socket starts to
        # be watched (None: watched, registered in the poll set by its fd).
        self._timers: dict[Endpoint, float | None] = {}
        self._watch_at: dict[Endpoint, float | None] = {}
        self._watched: dict[int, Endpoint] = {}
        self._fds: dict[Endpoint, int] = {}
        # What the thread sleeps until (time.time() clock; None: no timer). With a
        # timerfd, what the timerfd is armed for.
        self._armed: float | None = None
        self._thread: threading.Thread | None = None

    # -- called by endpoints, with their lock held -------------------------------------------

    def attach(self, endpoint: Endpoint, timer: float | None, grace: bool = True) -> None:
        """Watch `endpoint` (its timers at once, its socket after WATCH_GRACE)."""
        with self._lock:
            if endpoint not in self._timers:
                self._fds[endpoint] = endpoint.watch_fd()
                if grace:
                    self._watch_at[endpoint] = time.time() + WATCH_GRACE
                else:
                    self._watch(endpoint)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="quic-sim reactor", daemon=True)
                    self._thread.start()
            self._timers[endpoint] = timer
            poke = self._rearm()
        if poke:
            self._poke()

    def detach(self, endpoint: Endpoint) -> None:
        with self._lock:
            if endpoint in self._timers:
                del self._timers[endpoint]
                fd = self._fds.pop(endpoint)
                if self._watch_at.pop(endpoint, None) is None and self._watched.pop(fd, None) is not None:
                    with contextlib.suppress(KeyError, OSError, ValueError):
                        self._poll.unregister(fd)
                self._rearm()

    def reschedule(self, endpoint: Endpoint, timer: float | None) -> None:
        """`endpoint`'s earliest timer is now `timer`."""
        with self._lock:
            if endpoint not in self._timers or self._timers[endpoint] == timer:
                return
            self._timers[endpoint] = timer
            poke = self._rearm()
        if poke:
            self._poke()

    def _watch(self, endpoint: Endpoint) -> None:
        """Start watching the endpoint's socket (reactor lock held)."""
        self._watch_at[endpoint] = None
        fd = self._fds[endpoint]
        self._watched[fd] = endpoint
        self._poll.register(fd, select.POLLIN)

    def _rearm(self) -> bool:
        """Sleep until the earliest timer (reactor lock held); True if the thread must be
        woken to see it (no timerfd, and earlier than what it sleeps for)."""
        best: float | None = None
        for timer in self._timers.values():
            if timer is not None and (best is None or timer < best):
                best = timer
        for timer in self._watch_at.values():
            if timer is not None and (best is None or timer < best):
                best = timer
        armed = self._armed
        if best == armed:
            return False
        earlier = best is not None and (armed is None or best < armed)
        if self._timerfd is not None:
            # A later (or no) timer: leave a far wake-up armed, the thread wakes once,
            # finds nothing due and sleeps again; re-arm a near one, which would wake it
            # in the middle of what the application does.
            if earlier or armed - time.time() < LATER_REARM:  # type: ignore[operator]
                self._timerfd.arm(best)
                self._armed = best
            return False
        if earlier:
            self._armed = best
        return earlier  # a later timer: the thread wakes early once and looks again

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: a full pipe wakes the loop as well
            os.write(self._wake_w, b"\0")

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                self._turn()
            except Exception:  # the simulated kernel must not die silently
                log.exception("simulation reactor: a turn failed")
                time.sleep(0.01)

    def _turn(self) -> None:
        events = self._wait()
        with self._lock:
            steps, now = self._due_steps(events)
        for endpoint, (readable, lag) in steps.items():
            endpoint.background_step(now, readable, lag)
        with self._lock:
            if self._timerfd is not None and self._armed is not None and self._armed <= time.time():
                self._armed = None  # expired: whatever is next must be armed again
            self._rearm()  # this thread reads it before it sleeps again: no poke

    def _wait(self) -> list[tuple[int, int]]:
        """Sleep until a watched fd is ready, the thread is woken, or (without a timerfd)
        the armed time comes."""
        timeout: float | None = None
        if self._timerfd is None:
            with self._lock:
                armed = self._armed
            if armed is not None:
                timeout = max(0.0, armed - time.time())
        if self._epoll is not None:
            return self._epoll.poll(-1 if timeout is None else timeout)
        return self._poll.poll(None if timeout is None else timeout * 1000.0)

    def _due_steps(self, events: list[tuple[int, int]]) -> tuple[dict[Endpoint, tuple[bool, float]], float]:
        """What each endpoint must do now, as (readable, lag), and now (reactor lock held)."""
        steps = self._readable(events)
        now = time.time()
        for endpoint, watch_at in list(self._watch_at.items()):
            if watch_at is not None and watch_at <= now:
                # The grace is over: watch the socket, and read what waited there
                # (up to WATCH_GRACE: the connections' ACK timers take that off).
                self._watch(endpoint)
                steps[endpoint] = (True, WATCH_GRACE)
        for endpoint, timer in self._timers.items():
            if timer is not None and timer <= now and endpoint not in steps:
                steps[endpoint] = (False, 0.0)
        if self._timerfd is None:
            self._armed = None
        return steps, now

    def _readable(self, events: list[tuple[int, int]]) -> dict[Endpoint, tuple[bool, float]]:
        """The endpoints whose sockets `events` says are readable; the wake-up pipe drained
        and the timerfd cleared (reactor lock held)."""
        steps: dict[Endpoint, tuple[bool, float]] = {}
        for fd, _ in events:
            endpoint = self._watched.get(fd)
            if endpoint is not None:
                steps[endpoint] = (True, 0.0)
            elif fd == self._wake_r:
                self._drain()
            elif self._timerfd is not None and fd == self._timerfd.fd:
                self._timerfd.clear()
        return steps

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
