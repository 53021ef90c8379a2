"""One worker process: requests from a `RequestSource`, each served on a thread of its own
(spec tlshd-behaviour §2.4, §9.2 item 7, §9.4 "Process model").

A worker replaces tlshd's fork-per-request child with a thread per request in flight, bounded
by a semaphore. Threads are kept for the next request once theirs is done (an idle thread
leaves after `idle_timeout` seconds without work): a new thread costs more than the thread
start itself, since its first handshake also pays for the thread's cold state (OpenSSL's
per-thread random generators, allocator caches, CPU caches), about a third more CPU than a
handshake on a thread that has served one before. Every request obtained from the source gets
exactly one `source.done(fd, result)` and then its fd is closed, whatever happens in
`handle()` (which never raises) or in `done()`. The configuration is read from
`config_provider()` once per request, so a reload swaps it atomically for new requests only;
requests already running keep the configuration they began with.

Sources:
    NetlinkSource   the kernel: READY multicast -> ACCEPT (EAGAIN: another worker took it) ->
                    HandshakeRequest; done() sends DONE on a fresh netlink socket.
    QueueSource     an in-process queue of (fd, HandshakeRequest), for tests and embedding.
"""
from __future__ import annotations

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
        try:
            os.close(fd)
        except OSError:
            pass


class Worker:
    """Serve requests from `source` concurrently until `stop()`."""

    def __init__(self, source: RequestSource, config_provider: Callable[[], DaemonConfig],
                 stats: HandshakeStats | StatsPublisher | None = None, *, concurrency: int = DEFAULT_CONCURRENCY,
                 poll_interval: float = 0.2, idle_timeout: float = IDLE_THREAD_TIMEOUT) -> None:
        self.source = source
        self.config_provider = config_provider
        self.stats = stats
        self.poll_interval = poll_interval
        self.idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(concurrency)
        self._stopping = threading.Event()
        self._drain_timeout: float | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._running = 0  # requests being served
        self._idle: list[queue.SimpleQueue] = []  # the inboxes of idle threads, the latest last
        self._threads = 0  # live threads, idle or not

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._running

    @property
    def threads(self) -> int:
        """Threads alive, serving or idle."""
        with self._lock:
            return self._threads

    def stop(self, drain_timeout: float | None = None) -> None:
        """Take no more requests; serve_forever() then waits up to `drain_timeout` seconds
        (default: its own argument) for the running ones."""
        if drain_timeout is not None:
            self._drain_timeout = drain_timeout
        self._stopping.set()

    def serve_forever(self, drain_timeout: float = 5.0) -> None:
        """Take requests until stop(); then wait up to `drain_timeout` for running ones."""
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=self.poll_interval):
                continue
            try:
                item = self.source.next(self.poll_interval)
            except Exception as exc:
                self._slots.release()
                log.error("request source failed: %s: %s", type(exc).__name__, exc)
                time.sleep(self.poll_interval)
                continue
            if item is None:
                self._slots.release()
                continue
            self.submit(*item, _slot_taken=True)
        drain = drain_timeout if self._drain_timeout is None else self._drain_timeout
        if not self.join(drain):
            log.error("%d requests still running after %.0f s; leaving them", self.in_flight, drain)
        self._dismiss_idle()

    def submit(self, fd: int, request: HandshakeRequest, *, _slot_taken: bool = False) -> None:
        """Run one request on an idle thread, or on a new one."""
        if not _slot_taken:
            self._slots.acquire()
        with self._lock:
            self._running += 1
            inbox = self._idle.pop() if self._idle else None  # the thread that ran last: warmest
            if inbox is None:
                self._threads += 1
        if inbox is not None:
            inbox.put((fd, request))
            return
        thread = threading.Thread(target=self._thread, args=(fd, request), name=f"handshake fd {fd}", daemon=True)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads -= 1
            self._finish(fd, DoneResult(errno.EIO))
            self._ended()
            raise

    def join(self, timeout: float | None = None) -> bool:
        """Wait for running requests; True if none is left."""
        with self._changed:
            return self._changed.wait_for(lambda: self._running == 0, timeout)

    def _thread(self, fd: int, request: HandshakeRequest) -> None:
        """One thread: serve a request, then wait as an idle thread for the next one."""
        me = threading.current_thread()
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        item: tuple[int, HandshakeRequest] | None = (fd, request)
        del request  # nothing of a request is kept while the thread is idle (its socket object)
        try:
            while item is not None:
                me.name = f"handshake fd {item[0]}"
                self._run(*item)
                item = None
                me.name = "handshake (idle)"
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._idle.append(inbox)
                try:
                    item = inbox.get(timeout=self.idle_timeout)
                except queue.Empty:
                    with self._lock:
                        if any(box is inbox for box in self._idle):
                            self._idle.remove(inbox)
                            return
                    item = inbox.get()  # taken from the idle list just now: its request is on the way
        finally:
            with self._lock:
                self._threads -= 1

    def _dismiss_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)

    def _ended(self) -> None:
        with self._changed:
            self._running -= 1
            self._changed.notify_all()
        self._slots.release()

    def _run(self, fd: int, request: HandshakeRequest) -> None:
        result = DoneResult(errno.EIO)
        token = self.stats.record_start() if self.stats is not None else None
        delay = 0
        try:
            config = self.config_provider()
            delay = config.debug.delay_done
            result = handle(request, config)
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
        peername=fields.get("peername"), timeout_ms=fields.get("timeout") or 0, keyring=fields.get("keyring") or 0,
    )
