"""The status process: collects the workers' statistics and serves them on D-Bus.

The supervisor forks it (before any thread exists, like the workers) when the
configuration's `[quichsd] dbus` is `system` or `session`. It drops to the configured user
with no capabilities at all, then runs DbusService (org.quichsd1) in a thread and feeds its
HandshakeStats from the workers' datagrams (stats_channel.py). Reload() on D-Bus checks
the file and asks the supervisor through a pipe; it reloads as for SIGHUP.

If the bus cannot be reached or the name is taken, the process says why and exits with
EXIT_NO_BUS; the supervisor then runs on without a status service instead of restarting it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable

from .. import __version__
from . import config as cfgmod
from .config import DaemonConfig
from .dbus_service import DbusService, DbusServiceError
from .stats import HandshakeStats
from .stats_channel import MAX_DATAGRAM, StatsCollector

log = logging.getLogger(__name__)

EXIT_NO_BUS = 3
_REAP_INTERVAL = 1.0


RELOAD_REQUEST = b"R"


def reload_via_pipe(control: int, config_path: str | None) -> Callable[[], bool]:
    """Reload(): False for a file that does not parse; else ask the supervisor, which
    reloads as for SIGHUP (a signal would need the supervisor's uid, which we dropped)."""

    def reload() -> bool:
        # A file we cannot read after the drop is for the supervisor (root) to judge.
        if config_path and os.access(config_path, os.R_OK):
            try:
                cfgmod.load_file(config_path)
            except (cfgmod.ConfigError, OSError) as exc:
                log.error("Reload refused: %s", exc)
                return False
        try:
            os.write(control, RELOAD_REQUEST)
        except OSError as exc:
            log.error("Reload: cannot reach the supervisor: %s", exc)
            return False
        return True

    return reload


def _load_bus_code() -> None:
    """Import what serving D-Bus may import lazily, while the files are still readable (the
    drop may take away access to where Python and its packages live)."""
    import concurrent.futures.thread  # noqa: F401 -- Reload() runs in an executor

    import dbus_next

    from .preload import import_package

    # dbus_next.glib needs PyGObject; we use asyncio.
    import_package(dbus_next, lambda name: name.startswith("dbus_next.glib"))


def run_status_process(rx: socket.socket, config: DaemonConfig, config_path: str | None, control: int,
                       init: Callable[[DaemonConfig], None] | None = None) -> int:
    """The body of the status process. Returns its exit status."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    _load_bus_code()

    if init is not None:
        init(config)  # the privilege drop: still single-threaded here
    stats = HandshakeStats()
    service = DbusService(stats, reload_via_pipe(control, config_path), system=config.dbus == "system",
                          version=__version__)
    try:
        service.start()
    except (DbusServiceError, OSError, ValueError) as exc:
        log.error("No D-Bus status service (%s bus): %s", config.dbus, exc)
        return EXIT_NO_BUS
    log.info("D-Bus status service org.quichsd1 on the %s bus", config.dbus)
    collector = StatsCollector(stats)
    next_reap = time.monotonic() + _REAP_INTERVAL
    try:
        while not stop.is_set():
            if select.select([rx], [], [], 0.5)[0]:
                with contextlib.suppress(BlockingIOError):
                    collector.feed(rx.recv(MAX_DATAGRAM))
            if time.monotonic() >= next_reap:
                next_reap = time.monotonic() + _REAP_INTERVAL
                collector.forget_dead()
    finally:
        service.stop()
    return 0
