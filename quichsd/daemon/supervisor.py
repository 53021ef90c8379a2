"""The daemon's process model: a single-threaded supervisor and N forked worker processes
(spec tlshd-behaviour §2.2-2.3, §2.6, §2.9, §9.2, §9.4).

The supervisor never starts a thread: it forks every child first (capabilities are per thread,
so the privilege drop in `worker_init` happens in the child before its first thread), then waits
on signals with sigtimedwait. It stays root, so that it can read files again on a reload.
Children: N workers, and with `status_service` one status process (status_process.py) that
serves D-Bus and hears from the workers over a datagram socket pair (stats_channel.py).

    SIGHUP, SIGUSR1   reload: the supervisor re-reads the config file; a bad file keeps the old
                      configuration (and says why). A good one is swapped in, `on_reload` runs
                      (keyring links), and the workers are replaced: each old worker gets
                      SIGUSR2, takes no new request, finishes the ones it has and exits,
                      while a new worker, forked with the new configuration (and reading its
                      files as root again before it drops privileges), takes new requests.
    SIGINT, SIGTERM   orderly stop: SIGTERM to the children, wait, SIGKILL stragglers, exit 0
    SIGCHLD           reap; a child that died unexpectedly is restarted after a backoff

A worker exits with EXIT_FAMILY_MISSING if its source cannot open the handshake family; the
supervisor then stops and returns that status. `preflight` (run in the supervisor before any
fork) lets the CLI detect that up front with a clear message.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from . import config as cfgmod
from .config import NOTICE, DaemonConfig
from .netlink import FamilyMissing
from .stats_channel import StatsPublisher
from .status_process import EXIT_NO_BUS, RELOAD_REQUEST
from .worker import RequestSource, Worker

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 1
# DIFFERENCE FROM tlshd (spec §2.9): tlshd exits 0 when the handshake family is missing;
# we exit non-zero so that a service manager reports the failure.
EXIT_FAMILY_MISSING = 2
FAMILY_MISSING_MESSAGE = "Kernel handshake service is not available"

_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
# A worker told to retire finishes its requests within this many seconds (each has its own,
# shorter, deadline; this only bounds a request that misbehaves).
RETIRE_DRAIN = 600.0
STOP_DRAIN = 5.0


def sd_notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send `state` to $NOTIFY_SOCKET (systemd's notify protocol); False if unset or failing."""
    address = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
        return True
    except OSError as exc:
        log.debug("sd_notify(%s): %s", state, exc)
        return False


class ConfigHolder:
    """The worker's current configuration; reload() keeps the old one on a bad file."""

    def __init__(self, config: DaemonConfig, path: str | None) -> None:
        self.config = config
        self.path = path
        self._lock = threading.Lock()

    def get(self) -> DaemonConfig:
        return self.config

    def reload(self) -> bool:
        if not self.path:
            log.log(NOTICE, "No configuration file to reload")
            return False
        new, error = cfgmod.reload(self.config, self.path)
        if error is not None:
            log.error("Keeping the previous configuration: %s", error)
            return False
        with self._lock:
            self.config = new
        log.log(NOTICE, "Configuration reloaded successfully")
        return True


def run_worker(source_factory: Callable[[], RequestSource], config: DaemonConfig,
               worker_init: Callable[[DaemonConfig], None] | None = None,
               stats: StatsPublisher | None = None) -> int:
    """The body of one worker process. Returns its exit status."""
    workers: list[Worker] = []

    def on_stop(signum: int, frame: FrameType | None) -> None:
        for w in workers:
            w.stop(RETIRE_DRAIN if signum == signal.SIGUSR2 else STOP_DRAIN)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR2, on_stop)
    # The supervisor decides about reloads and Ctrl-C (which hits the whole process group).
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if worker_init is not None:
        worker_init(config)  # read files, drop privileges: still single-threaded here
    try:
        source = source_factory()
    except FamilyMissing as exc:
        log.error("%s: %s", FAMILY_MISSING_MESSAGE, exc)
        return EXIT_FAMILY_MISSING
    worker = Worker(source, lambda: config, stats, concurrency=config.handshakes)
    workers.append(worker)
    settle_garbage_collector()
    log.debug("worker %d serving", os.getpid())
    worker.serve_forever()
    close = getattr(source, "close", None)
    if close is not None:
        close()
    return EXIT_OK


# The cyclic garbage collector in a worker: a generation-0 collection once this many more
# container objects are alive than at the last one (CPython's default: 700).
GC_THRESHOLD0 = 20_000


def settle_garbage_collector() -> None:
    """For a worker about to serve: what it has loaded (code, configuration, credentials)
    lives as long as it does, so the cyclic collector need not look at it again
    (gc.freeze()), and a collection is due only after many more objects than CPython's
    default 700: a request's objects die by reference counting, mostly before any
    collection would have seen them. Under QEMU the default cost about a millisecond per
    request (a generation-0 collection per request, 0.7 ms each, and a generation-1 one
    every few). Reference cycles are still collected, later and in larger batches."""
    gc.collect()
    gc.freeze()
    _, threshold1, threshold2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, threshold1, threshold2)


@dataclass
class _Slot:
    index: int
    kind: str = "worker"  # or "status"
    pid: int = 0
    disabled: bool = False
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float = 0.0


@dataclass
class Supervisor:
    source_factory: Callable[[], RequestSource]
    config: DaemonConfig
    config_path: str | None = None
    workers: int = 1
    worker_init: Callable[[DaemonConfig], None] | None = None
    # The status process (D-Bus): forked when set; status_init is its privilege drop.
    status_service: bool = False
    status_init: Callable[[DaemonConfig], None] | None = None
    on_reload: Callable[[DaemonConfig], None] | None = None
    preflight: Callable[[], None] | None = None
    min_backoff: float = 0.1
    max_backoff: float = 5.0
    stop_timeout: float = 5.0
    on_ready: Callable[[], None] | None = None
    slots: list[_Slot] = field(default_factory=list)
    retiring: set[int] = field(default_factory=set)

    def pids(self) -> list[int]:
        return [s.pid for s in self.slots if s.pid] + sorted(self.retiring)

    def _child_body(self, slot: _Slot) -> int:
        rx, tx = self._stats_pair or (None, None)
        if slot.kind == "status":
            from .status_process import run_status_process

            assert rx is not None  # a status slot exists only with status_service, which made the pair
            if tx is not None:
                tx.close()
            os.close(self._control[0])
            return run_status_process(rx, self.config, self.config_path, self._control[1], self.status_init)
        if rx is not None:
            rx.close()
        for fd in self._control:
            os.close(fd)
        return run_worker(self.source_factory, self.config, self.worker_init,
                          StatsPublisher(tx) if tx is not None else None)

    def _spawn(self, slot: _Slot) -> None:
        pid = os.fork()
        if pid == 0:  # child
            status = 70
            try:
                status = self._child_body(slot)
            except BaseException as exc:
                with contextlib.suppress(BaseException):
                    log.error("%s failed: %s: %s", slot.kind, type(exc).__name__, exc)
            finally:
                try:
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(status)
        slot.pid = pid
        slot.started = time.monotonic()
        log.info("%s %d started (pid %d)", slot.kind, slot.index, pid)

    def run(self) -> int:
        if self.preflight is not None:
            try:
                self.preflight()
            except FamilyMissing as exc:
                log.error("%s: %s", FAMILY_MISSING_MESSAGE, exc)
                return EXIT_FAMILY_MISSING
        if threading.active_count() > 1:
            log.warning("supervisor has %d threads before forking workers", threading.active_count())
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        # SIGCHLD must not be SIG_IGN, or the kernel reaps children before we see them.
        old_chld = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self._holder = ConfigHolder(self.config, self.config_path)
        self._stats_pair = socket.socketpair(socket.AF_UNIX,
                                             socket.SOCK_DGRAM) if self.status_service else None
        # Requests from the status process (Reload() on D-Bus); read between signal waits.
        self._control = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return self._loop()
        finally:
            for sock in self._stats_pair or ():
                sock.close()
            for fd in self._control:
                os.close(fd)
            signal.signal(signal.SIGCHLD, old_chld)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _loop(self) -> int:
        self.slots = [_Slot(i) for i in range(max(1, self.workers))]
        if self.status_service:
            self.slots.append(_Slot(0, "status"))
        for slot in self.slots:
            self._spawn(slot)
        sd_notify("READY=1")
        if self.on_ready is not None:
            self.on_ready()
        status = EXIT_OK
        while True:
            now = time.monotonic()
            for slot in self.slots:
                if not slot.pid and not slot.disabled and now >= slot.restart_at:
                    self._spawn(slot)
            info = signal.sigtimedwait(_SIGNALS, 0.1)
            if info is not None:
                if info.si_signo in (signal.SIGHUP, signal.SIGUSR1):
                    self._reload()
                elif info.si_signo in (signal.SIGINT, signal.SIGTERM):
                    break
            if self._control_requests():
                self._reload()
            failed = self._reap()
            if failed is not None:
                status = failed
                break
        self._stop_workers()
        log.log(NOTICE, "Shutting down.")
        return status

    def _control_requests(self) -> bool:
        """True if the status process asked for a reload since the last look."""
        try:
            return RELOAD_REQUEST in os.read(self._control[0], 64)
        except BlockingIOError:
            return False

    def _reload(self) -> None:
        if not self._holder.reload():
            return
        self.config = self._holder.get()
        if self.on_reload is not None:
            try:
                self.on_reload(self.config)
            except Exception as exc:
                log.error("applying the new configuration: %s: %s", type(exc).__name__, exc)
        for slot in self.slots:
            if slot.kind == "worker" and slot.pid:
                try:
                    os.kill(slot.pid, signal.SIGUSR2)
                    self.retiring.add(slot.pid)
                except ProcessLookupError:
                    pass
                slot.pid, slot.backoff, slot.restart_at = 0, 0.0, 0.0
        log.info("workers replaced; %d finishing their requests", len(self.retiring))

    def _signal_all(self, signum: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _reap(self) -> int | None:
        """Collect dead workers and schedule restarts; a fatal exit status to stop with, or None."""
        while True:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            code = os.waitstatus_to_exitcode(wstatus)
            if pid in self.retiring:
                self.retiring.discard(pid)
                log.debug("retired worker pid %d exited (%s)", pid, code)
                continue
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = 0
            if code == EXIT_FAMILY_MISSING:
                return EXIT_FAMILY_MISSING
            if slot.kind == "status" and code == EXIT_NO_BUS:
                slot.disabled = True
                continue
            now = time.monotonic()
            if now - slot.started < 2 * self.max_backoff:
                slot.backoff = min(self.max_backoff, max(self.min_backoff, slot.backoff * 2))
            else:
                slot.backoff = self.min_backoff
            slot.restart_at = now + slot.backoff
            log.error("%s %d (pid %d) died (%s); restarting in %.1f s", slot.kind, slot.index, pid,
                      f"signal {-code}" if code < 0 else f"status {code}", slot.backoff)

    def _stop_workers(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while self.pids() and time.monotonic() < deadline:
            for pid in self.pids():
                try:
                    gone = os.waitpid(pid, os.WNOHANG)[0] != 0
                except ChildProcessError:
                    gone = True
                if gone:
                    self._forget(pid)
            time.sleep(0.02)
        for pid in self.pids():
            log.error("child pid %d did not stop; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self._forget(pid)

    def _forget(self, pid: int) -> None:
        self.retiring.discard(pid)
        for slot in self.slots:
            if slot.pid == pid:
                slot.pid = 0
