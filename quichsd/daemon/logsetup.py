"""The daemon's logging (spec tlshd-behaviour §2.7): syslog, facility LOG_AUTH, lines
"quichsd[PID]: message" as openlog(LOG_PID) writes them; `-s` copies every record to stderr.

Syslog that cannot be reached never costs a traceback per record (the standard SysLogHandler
connects lazily and reports each failure through handleError as "--- Logging error ---"):

- at start-up the syslog address is connected to once; if that fails the daemon logs to
  stderr instead and says so in one line;
- later, a record syslog does not take goes to stderr (unless `-s` already put it there),
  with one line when syslog stops taking records and one when it takes them again; each
  record tries syslog first, so a restarted syslog daemon is used again.
"""
from __future__ import annotations

import logging
import logging.handlers
import socket
import sys
from typing import TextIO

SYSLOG_ADDRESS = "/dev/log"
SYSLOG_FORMAT = "quichsd[%(process)d]: %(message)s"
STDERR_FORMAT = "quichsd[%(process)d]: %(levelname)s %(message)s"

Address = str | tuple[str, int]


def _say(stream: TextIO | None, text: str) -> None:
    """One line of our own about logging itself, straight to `stream` (stderr)."""
    stream = stream if stream is not None else sys.stderr
    try:
        stream.write(f"quichsd: {text}\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def syslog_unreachable(address: Address) -> OSError | None:
    """Why syslog at `address` cannot take records now, or None if it can. A path is a Unix
    socket (datagram, else stream, as SysLogHandler tries); a (host, port) is UDP, which
    can only be checked to resolve."""
    if isinstance(address, str):
        error: OSError | None = None
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            try:
                with socket.socket(socket.AF_UNIX, kind) as probe:
                    probe.connect(address)
                return None
            except OSError as exc:
                error = error or exc
        return error
    try:
        socket.getaddrinfo(address[0], address[1], type=socket.SOCK_DGRAM)
    except OSError as exc:
        return exc
    return None


class SyslogHandler(logging.handlers.SysLogHandler):
    """LOG_AUTH syslog whose failures degrade to `fallback` (a stderr handler, or None when
    every record reaches stderr anyway) instead of printing a traceback."""

    # Our NOTICE level (config.NOTICE, 25) is syslog's LOG_NOTICE, not the default "warning".
    priority_map = {**logging.handlers.SysLogHandler.priority_map, "NOTICE": "notice"}

    def __init__(self, address: Address, fallback: logging.Handler | None,
                 stream: TextIO | None = None) -> None:
        super().__init__(address, facility=logging.handlers.SysLogHandler.LOG_AUTH)
        self.fallback = fallback
        self.stream = stream
        self.degraded = False
        self._failed = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        super().emit(record)  # a failure comes back through handleError
        if self.degraded and not self._failed:
            self.degraded = False
            _say(self.stream, f"syslog ({self._where()}) takes records again")

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)  # a bad log call, not syslog: logging's usual report
            return
        self._failed = True
        if not self.degraded:
            self.degraded = True
            where = "stderr" if self.fallback is not None else "stderr only (-s)"
            _say(self.stream, f"syslog ({self._where()}) does not take records: {exc}; logging to {where}")
        if self.fallback is not None:
            self.fallback.handle(record)

    def _where(self) -> str:
        return self.address if isinstance(self.address, str) else f"{self.address[0]}:{self.address[1]}"


def _stderr_handler(stream: TextIO | None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    return handler


def setup(foreground: bool, level: int, also_stderr: bool = False, *,
          syslog_address: Address = SYSLOG_ADDRESS, stream: TextIO | None = None) -> list[logging.Handler]:
    """Replace the root logger's handlers: stderr only (`foreground`), else syslog, and with
    `also_stderr` (tlshd -s) a copy of every record on stderr. Returns the handlers."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handlers: list[logging.Handler] = []
    if foreground:
        handlers.append(_stderr_handler(stream))
    else:
        error = syslog_unreachable(syslog_address)
        if error is not None:
            where = syslog_address if isinstance(syslog_address, str) else "{}:{}".format(*syslog_address)
            _say(stream, f"syslog ({where}) unavailable: {error}; logging to stderr")
            handlers.append(_stderr_handler(stream))
        else:
            copy = _stderr_handler(stream) if also_stderr else None
            syslog = SyslogHandler(syslog_address, fallback=None if copy else _stderr_handler(stream),
                                   stream=stream)
            syslog.setFormatter(logging.Formatter(SYSLOG_FORMAT))
            handlers.append(syslog)
            if copy is not None:
                handlers.append(copy)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    return handlers
