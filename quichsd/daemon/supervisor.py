"""The daemon's process model: a single-threaded supervisor and N forked worker processes
(spec tlshd-behaviour §2.2-2.3, §2.6, §2.9, §9.2, §9.4).

The supervisor never starts a thread: it forks every worker first (capabilities are per thread,
so any privilege drop in `worker_init` happens in the child before its first thread), then waits
on signals with sigtimedwait. Signals:

    SIGHUP, SIGUSR1   forwarded to every worker as SIGHUP; each worker re-reads the config
                      file (config.reload) and keeps the old one if the new file is bad
    SIGINT, SIGTERM   orderly stop: SIGTERM to the workers, wait, SIGKILL stragglers, exit 0
    SIGCHLD           reap; a worker that died unexpectedly is restarted after a backoff

A worker exits with EXIT_FAMILY_MISSING if its source cannot open the handshake family; the
supervisor then stops and returns that status. `preflight` (run in the supervisor before any
fork) lets the CLI detect that up front with a clear message.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import config as cfgmod
from .config import NOTICE, DaemonConfig
from .netlink import FamilyMissing
from .worker import RequestSource, Worker

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 1
# DIFFERENCE FROM tlshd (spec §2.9): tlshd exits 0 when the handshake family is missing;
# we exit non-zero so that a service manager reports the failure.
EXIT_FAMILY_MISSING = 2
FAMILY_MISSING_MESSAGE = "Kernel handshake service is not available"

_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


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


def run_worker(source_factory: Callable[[], RequestSource], holder: ConfigHolder,
               worker_init: Callable[[], None] | None = None) -> int:
    """The body of one worker process. Returns its exit status."""
    hup = threading.Event()
    stop: list[Worker] = []

    def on_hup(signum, frame) -> None:  # noqa: ANN001
        hup.set()

    def on_term(signum, frame) -> None:  # noqa: ANN001
        for w in stop:
            w.stop()

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGUSR1, on_hup)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides (Ctrl-C hits the group)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if worker_init is not None:
        worker_init()  # e.g. privileges.drop_privileges: still single-threaded here
    try:
        source = source_factory()
    except FamilyMissing as exc:
        log.error("%s: %s", FAMILY_MISSING_MESSAGE, exc)
        return EXIT_FAMILY_MISSING
    worker = Worker(source, holder.get)
    stop.append(worker)

    def idle() -> None:
        if hup.is_set():
            hup.clear()
            holder.reload()

    worker.on_idle = idle
    log.debug("worker %d serving", os.getpid())
    worker.serve_forever()
    close = getattr(source, "close", None)
    if close is not None:
        close()
    return EXIT_OK


@dataclass
class _Slot:
    index: int
    pid: int = 0
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float = 0.0


@dataclass
class Supervisor:
    source_factory: Callable[[], RequestSource]
    config: DaemonConfig
    config_path: str | None = None
    workers: int = 1
    worker_init: Callable[[], None] | None = None
    preflight: Callable[[], None] | None = None
    min_backoff: float = 0.1
    max_backoff: float = 5.0
    stop_timeout: float = 5.0
    on_ready: Callable[[], None] | None = None
    slots: list[_Slot] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [s.pid for s in self.slots if s.pid]

    def _spawn(self, slot: _Slot) -> None:
        holder = ConfigHolder(self.config, self.config_path)
        pid = os.fork()
        if pid == 0:  # child
            status = 70
            try:
                status = run_worker(self.source_factory, holder, self.worker_init)
            except BaseException as exc:
                try:
                    log.error("worker failed: %s: %s", type(exc).__name__, exc)
                except BaseException:
                    pass
            finally:
                try:
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(status)
        slot.pid = pid
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, pid)

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
        try:
            return self._loop()
        finally:
            signal.signal(signal.SIGCHLD, old_chld)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _loop(self) -> int:
        self.slots = [_Slot(i) for i in range(max(1, self.workers))]
        for slot in self.slots:
            self._spawn(slot)
        sd_notify("READY=1")
        if self.on_ready is not None:
            self.on_ready()
        status = EXIT_OK
        while True:
            now = time.monotonic()
            for slot in self.slots:
                if not slot.pid and now >= slot.restart_at:
                    self._spawn(slot)
            info = signal.sigtimedwait(_SIGNALS, 0.1)
            if info is not None:
                if info.si_signo in (signal.SIGHUP, signal.SIGUSR1):
                    log.log(NOTICE, "Reloading configuration in %d workers", len(self.pids()))
                    self._signal_all(signal.SIGHUP)
                elif info.si_signo in (signal.SIGINT, signal.SIGTERM):
                    break
            failed = self._reap()
            if failed is not None:
                status = failed
                break
        self._stop_workers()
        log.log(NOTICE, "Shutting down.")
        return status

    def _signal_all(self, signum: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _reap(self) -> int | None:
        """Collect dead workers and schedule restarts; a fatal exit status to stop with, or None."""
        while True:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = 0
            code = os.waitstatus_to_exitcode(wstatus)
            if code == EXIT_FAMILY_MISSING:
                return EXIT_FAMILY_MISSING
            now = time.monotonic()
            if now - slot.started < 2 * self.max_backoff:
                slot.backoff = min(self.max_backoff, max(self.min_backoff, slot.backoff * 2))
            else:
                slot.backoff = self.min_backoff
            slot.restart_at = now + slot.backoff
            log.error("worker %d (pid %d) died (%s); restarting in %.1f s", slot.index, pid,
                      f"signal {-code}" if code < 0 else f"status {code}", slot.backoff)

    def _stop_workers(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while self.pids() and time.monotonic() < deadline:
            for slot in self.slots:
                if slot.pid:
                    try:
                        pid, _ = os.waitpid(slot.pid, os.WNOHANG)
                    except ChildProcessError:
                        pid = slot.pid
                    if pid:
                        slot.pid = 0
            time.sleep(0.02)
        for slot in self.slots:
            if slot.pid:
                log.error("worker pid %d did not stop; killing it", slot.pid)
                try:
                    os.kill(slot.pid, signal.SIGKILL)
                    os.waitpid(slot.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
                slot.pid = 0
