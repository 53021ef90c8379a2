"""One worker process: requests from a `RequestSource`, each served on a thread of its own
(spec tlshd-behaviour §2.4, §9.2 item 7, §9.4 "Process model").

A worker replaces tlshd's fork-per-request child with a thread per request in flight, bounded
by a semaphore (`concurrency`, [quichsd] handshakes): a request that comes while the worker is
full, or when no thread can be started, is answered at once with DONE BUSY_STATUS, never
queued and never left without an answer; there are at most `concurrency` + 1 threads.
Threads are kept for the next request once theirs is done: a new thread costs more than
the thread start itself, since its first handshake also pays for the thread's cold
state (OpenSSL's per-thread random generators, allocator caches, CPU caches), about a third
more CPU than a handshake on a thread that has served one before.

The threads take turns at listening (leader/followers): one thread waits for the next request
from the source and serves the request it gets itself, so a request starts on the thread that
accepted it, with no hand-over to another thread on its path (a thread's wake-up, and the
interpreter lock passing to it: about half a millisecond per request under QEMU). It passes
the listening on when its handshake first waits for the peer (an idle thread takes it, or the
main thread starts one), so the one who listens next wakes while this one sleeps; a request
that ends without waiting keeps it, and its thread listens again. (Before a reverse DNS
lookup that is not cached, and before [debug] delay_done, the turn is passed on too: nothing
slow holds it.) An idle thread that has not had the turn for `idle_timeout` seconds leaves;
the listening one stays.

Every request obtained from the source gets exactly one `source.done(fd, result)` and then its
fd is closed, whatever happens in `handle()` (which never raises) or in `done()`. The
configuration is read from `config_provider()` once per request, so a reload swaps it
atomically for new requests only; requests already running keep the configuration they
began with.

Sources:
    NetlinkSource   the kernel: READY multicast -> ACCEPT (EAGAIN: another worker took it) ->
                    HandshakeRequest; done() sends DONE on the thread's own netlink socket.
    QueueSource     an in-process queue of (fd, HandshakeRequest), for tests and embedding.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .config import NOTICE, DaemonConfig
from .request import DoneResult, HandshakeRequest, handle
from .stats import HandshakeStats
from .stats_channel import StatsPublisher

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 256
# DONE's status for a request refused because the worker is full (or can start no thread):
# SunRPC retries ETIMEDOUT and takes any other error but EACCES as EACCES, a hard failure
# (spec tlshd-behaviour §1.10, §9.3); EAGAIN would end the mount.
BUSY_STATUS = errno.ETIMEDOUT
# Seconds an idle request thread waits for the next request before it ends.
IDLE_THREAD_TIMEOUT = 60.0


class RequestSource(Protocol):
    """Where requests come from and where their results go."""

    def next(self, timeout: float) -> tuple[int, HandshakeRequest] | None:
        """Block up to `timeout` seconds for one request: (fd, request), or None."""

    def done(self, fd: int, result: DoneResult) -> None:
        """Report `result` for the request owning `fd` (called exactly once per request).
        The worker closes `fd` afterwards."""


def close_fd(fd: int) -> None:
    if isinstance(fd, int) and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


class Worker:
    """Serve requests from `source` concurrently until `stop()`."""

    def __init__(self, source: RequestSource, config_provider: Callable[[], DaemonConfig],
                 stats: HandshakeStats | StatsPublisher | None = None, *,
                 concurrency: int = DEFAULT_CONCURRENCY, poll_interval: float = 0.2,
                 idle_timeout: float = IDLE_THREAD_TIMEOUT) -> None:
        self.source = source
        self.config_provider = config_provider
        self.stats = stats
        self.poll_interval = poll_interval
        self.idle_timeout = idle_timeout
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._stopping = threading.Event()
        self._drain_timeout: float | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a request ended, a thread left
        self._role_free = threading.Condition(self._lock)  # for idle threads: nobody listens
        self._wanted = threading.Condition(self._lock)  # for the main thread: start a listener
        self._running = 0  # requests being served
        self._threads = 0  # live threads: serving, listening or idle
        self._listening = False  # a thread holds the listening turn
        self._idle = 0  # threads waiting for the turn
        self._starting = 0  # threads the main thread started to listen, not yet at it
        self._no_thread = False  # the last thread start failed (said once until one works)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._running

    @property
    def threads(self) -> int:
        """Threads alive, serving, listening or idle."""
        with self._lock:
            return self._threads

    def stop(self, drain_timeout: float | None = None) -> None:
        """Take no more requests; serve_forever() then waits up to `drain_timeout` seconds
        (default: its own argument) for the running ones. Safe in a signal handler: it takes
        no lock (every wait here wakes within `poll_interval` to look)."""
        if drain_timeout is not None:
            self._drain_timeout = drain_timeout
        self._stopping.set()

    def serve_forever(self, drain_timeout: float = 5.0) -> None:
        """Keep a thread listening until stop(); then wait up to `drain_timeout` for the
        running requests."""
        while not self._stopping.is_set():
            with self._lock:
                start = not self._listening and not self._idle and not self._starting
                if start:
                    self._threads += 1
                    self._starting += 1
                else:
                    self._wanted.wait(self.poll_interval)
            if start and not self._start_thread(None):
                self._answer_without_thread()
        drain = drain_timeout if self._drain_timeout is None else self._drain_timeout
        if not self.join(drain):
            log.error("%d requests still running after %.0f s; leaving them", self.in_flight, drain)

    def submit(self, fd: int, request: HandshakeRequest, *, _slot_taken: bool = False) -> None:
        """Run one request on a new thread, which then joins the others."""
        if not _slot_taken:
            self._slots.acquire()
        with self._lock:
            self._running += 1
            self._threads += 1
        self._start_thread((fd, request))

    def _start_thread(self, item: tuple[int, HandshakeRequest] | None) -> bool:
        """A new thread (counted already by the caller), serving `item` first if given.
        False: no thread could be started (the process's thread limit, no memory for a
        stack); `item` then has its DONE (BUSY_STATUS)."""
        name = f"handshake fd {item[0]}" if item is not None else "handshake (idle)"
        thread = threading.Thread(target=self._thread, args=(item,), name=name, daemon=True)
        try:
            thread.start()
        except BaseException as exc:
            with self._lock:
                self._threads -= 1
                if item is None:
                    self._starting -= 1
            if item is not None:
                self._finish(item[0], DoneResult(BUSY_STATUS if isinstance(exc, RuntimeError) else errno.EIO))
                self._ended()
            if not isinstance(exc, RuntimeError):  # "can't start new thread"; anything else is not ours
                raise
            if not self._no_thread:
                self._no_thread = True
                log.error("cannot start a request thread (%s): requests get DONE %s until one starts",
                          exc, errno.errorcode[BUSY_STATUS])
            return False
        if self._no_thread:
            self._no_thread = False
            log.log(NOTICE, "request threads start again")
        return True

    def _answer_without_thread(self) -> None:
        """No thread could be started to listen: the main thread takes the turn for one
        wait, and a request that comes gets its DONE (BUSY_STATUS) rather than no answer."""
        with self._lock:
            if self._listening or self._stopping.is_set():
                return
            self._listening = True
        item = None
        try:
            item = self.source.next(self.poll_interval)
        except Exception as exc:
            log.error("request source failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._release_turn()
        if item is not None:
            self._refuse(item, "no thread could be started for it")

    def _refuse(self, item: tuple[int, HandshakeRequest], why: str) -> None:
        log.warning("Handshake request refused (fd %s): %s", item[0], why)
        if self.stats is not None:  # counted as a failure, so `quichsd status` shows it
            try:
                self.stats.record_done(self.stats.record_start(), peer=item[1].peername or "",
                                       status=BUSY_STATUS)
            except Exception:
                log.debug("stats failed", exc_info=True)
        self._finish(item[0], DoneResult(BUSY_STATUS))

    def join(self, timeout: float | None = None) -> bool:
        """Wait for running requests; True if none is left."""
        with self._changed:
            return self._changed.wait_for(lambda: self._running == 0, timeout)

    def _thread(self, item: tuple[int, HandshakeRequest] | None) -> None:
        """One thread: serve, listen for the next request (or wait for the turn), serve it."""
        me = threading.current_thread()
        fresh = item is None  # started by the main thread to listen
        holding = [False]  # this thread has the listening turn (while serving: not yet passed)

        def pass_turn() -> None:
            if holding[0]:
                holding[0] = False
                self._release_turn()

        try:
            while True:
                if item is not None:
                    me.name = f"handshake fd {item[0]}"
                    self._run(*item, on_wait=pass_turn)
                    item = None  # nothing of the request is kept while idle
                    me.name = "handshake (idle)"
                held, holding[0] = holding[0], False  # _listen takes it over (or releases it)
                item = self._listen(fresh, held)
                fresh = False
                if item is None:
                    return
                holding[0] = True
        finally:
            pass_turn()
            with self._lock:
                self._threads -= 1
                self._wanted.notify()
                self._changed.notify_all()

    def _release_turn(self) -> None:
        with self._lock:
            self._listening = False
            if self._idle:
                self._role_free.notify()
            else:
                self._wanted.notify()  # the main thread starts a listener

    def _listen(self, fresh: bool = False, holding: bool = False) -> tuple[int, HandshakeRequest] | None:
        """Take the listening turn (an idle thread waits for it up to `idle_timeout`; a thread
        `holding` it goes on), then wait for a request: returned counted as running, with its
        slot taken, the turn still held (the caller passes it on). None: stopping, or idle
        too long; the turn is released. `fresh`: the thread's first turn, for which the main
        thread started it."""
        with self._lock:
            if fresh:
                self._starting -= 1
            if not holding:
                if self._listening:
                    self._idle += 1
                    try:
                        deadline = time.monotonic() + self.idle_timeout
                        while self._listening:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0 or self._stopping.is_set():
                                return None
                            self._role_free.wait(min(remaining, self.poll_interval))
                    finally:
                        self._idle -= 1
                if self._stopping.is_set():
                    return None
                self._listening = True
        item = None
        try:
            while not self._stopping.is_set():
                try:
                    item = self.source.next(self.poll_interval)
                except Exception as exc:
                    log.error("request source failed: %s: %s", type(exc).__name__, exc)
                    time.sleep(self.poll_interval)
                    continue
                if item is None:
                    continue
                if not self._slots.acquire(blocking=False):
                    # Full: answered now, never queued (tlshd-behaviour §9.2 item 4: one DONE
                    # per request); the consumer's retry may find a worker with room.
                    self._refuse(item, f"{self.concurrency} handshakes are running ([quichsd] handshakes)")
                    item = None
                    continue
                with self._lock:
                    self._running += 1
                return item
            return None
        finally:
            if item is None:
                self._release_turn()

    def _ended(self) -> None:
        with self._changed:
            self._running -= 1
            self._changed.notify_all()
        self._slots.release()

    def _run(self, fd: int, request: HandshakeRequest, on_wait: Callable[[], None] | None = None) -> None:
        result = DoneResult(errno.EIO)
        token = self.stats.record_start() if self.stats is not None else None
        delay = 0
        try:
            config = self.config_provider()
            delay = config.debug.delay_done
            result = handle(request, config, on_wait=on_wait)
        except BaseException as exc:  # handle() never raises; belt and braces
            log.error("request fd %s: %s: %s", fd, type(exc).__name__, exc)
        finally:
            if self.stats is not None:
                try:
                    self.stats.record_done(token, peer=result.address or request.peername or "",
                                           role=result.role, alpn=result.alpn, suite=result.suite,
                                           status=result.status)
                except Exception:
                    log.debug("stats failed", exc_info=True)
            if delay > 0:  # [debug] delay_done, a testing knob of tlshd's (§4.3)
                if on_wait is not None:
                    on_wait()  # another thread listens meanwhile
                time.sleep(delay)
            self._finish(fd, result)
            self._ended()

    def _finish(self, fd: int, result: DoneResult) -> None:
        try:
            self.source.done(fd, result)
        except Exception as exc:
            log.error("DONE for fd %s failed: %s: %s", fd, type(exc).__name__, exc)
        finally:
            close_fd(fd)


class QueueSource:
    """Requests put() in-process; results collected in `results` (fd -> DoneResult)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[int, HandshakeRequest]] = queue.Queue()
        self.results: dict[int, DoneResult] = {}
        self._changed = threading.Condition()

    def put(self, fd: int, request: HandshakeRequest) -> None:
        self._queue.put((fd, request))

    def next(self, timeout: float) -> tuple[int, HandshakeRequest] | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def done(self, fd: int, result: DoneResult) -> None:
        with self._changed:
            if fd in self.results:
                raise RuntimeError(f"second DONE for fd {fd}")
            self.results[fd] = result
            self._changed.notify_all()

    def wait(self, n: int, timeout: float) -> dict[int, DoneResult]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.results) >= n, timeout)
            return dict(self.results)


class NetlinkSource:
    """The kernel's handshake upcall (spec §1.4-1.7, §9.2): a listener joined to "tlshd",
    and ACCEPT and DONE on a channel of the calling thread's own (netlink.HandshakeChannel)."""

    def __init__(self) -> None:
        from .netlink import HandshakeChannel, ThreadChannels, resolve_family

        family_id, group = resolve_family()  # FamilyMissing propagates
        self.listener = HandshakeChannel(family_id, group)
        self._channels = ThreadChannels(family_id)
        self._pending: deque[int] = deque()
        self.capabilities = self._channels.get().probe()
        log.log(NOTICE, "Kernel capabilities: %s", self.capabilities.describe())

    def close(self) -> None:
        self.listener.close()

    def next(self, timeout: float) -> tuple[int, HandshakeRequest] | None:
        from .netlink import HANDSHAKE_HANDLER_CLASS_TLSHD

        if not self._pending:
            ready, _, _ = select.select([self.listener.fileno()], [], [], timeout)
            if not ready:
                return None
            try:
                classes = self.listener.recv_ready()
            except OSError as exc:  # ENOBUFS (overrun): recover rather than exit (§9.2 item 7)
                log.error("netlink receive: %s", exc)
                # Requests whose READY was lost are still queued in the kernel: try one.
                classes = [HANDSHAKE_HANDLER_CLASS_TLSHD]
            self._pending.extend(c for c in classes if c == HANDSHAKE_HANDLER_CLASS_TLSHD)
        while self._pending:
            handler_class = self._pending.popleft()
            try:
                fields = self._channels.get().accept(handler_class)
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    log.error("ACCEPT: %s", exc)
                continue  # EAGAIN: another worker took it
            fd = fields["sockfd"]
            if fd is None:
                continue
            return fd, request_from_accept(fields)
        return None

    def done(self, fd: int, result: DoneResult) -> None:
        # An attribute the kernel's policy rejects would make it drop the whole DONE (§9.2.5).
        remote_auth = result.remote_auth if self.capabilities.remote_peerids else []
        self._channels.get().done(result.status, fd, remote_auth)


def request_from_accept(fields: dict[str, Any]) -> HandshakeRequest:
    """parse_accept()'s dict as a HandshakeRequest (the first CERTIFICATE pair is used)."""
    cert, key = fields["certificates"][0] if fields.get("certificates") else (0, 0)
    return HandshakeRequest(
        sock=fields["sockfd"], message_type=fields["message_type"], auth_mode=fields["auth_mode"],
        peer_identities=tuple(fields.get("peer_identities") or ()), certificate=cert, private_key=key,
        peername=fields.get("peername"), timeout_ms=fields.get("timeout") or 0,
        keyring=fields.get("keyring") or 0,
    )
