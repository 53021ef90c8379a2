"""The `quichsd` command line."""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

# Exit statuses, the same in every subcommand (the daemon keeps tlshd's where it has one).
EXIT_OK = 0
EXIT_FAILED = 1  # the handshake, the exchange or the request failed; the network or system refused
EXIT_USAGE = 2  # a bad option or value, or a file named on the command line that cannot be used
EXIT_SOFTWARE = 70  # a bug in quichsd (sysexits' EX_SOFTWARE): one line; -v shows the traceback
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)

EPILOG = """\
exit status:
  0    success
  1    failure: the handshake or the echo failed or timed out, the address is in use,
       the host cannot be resolved, no daemon answered (status); daemon: its
       configuration cannot be loaded or privileges cannot be dropped (as tlshd)
  2    bad usage: an unknown option, a bad value, a file named on the command line
       (--cert, --key, --psk, --cafile, --session) that cannot be used; daemon: the
       kernel has no "handshake" netlink family either
  70   a bug in quichsd: one line, and its traceback with -v
  130  interrupted (Ctrl-C)
Every error is one line on stderr.
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (status 2), not the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="quichsd", description="Userspace TLS 1.3 handshake agent for in-kernel QUIC",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo",
                        help="handshakes in memory, then over loopback sockets, showing what was negotiated")

    server = commands.add_parser("server",
                                 help="accept QUIC connections, complete handshakes, echo stream data")
    server.add_argument("--listen", required=True, metavar="ADDR:PORT")
    server.add_argument("--cert", help="certificate chain (PEM)")
    server.add_argument("--key", help="private key (PEM)")
    server.add_argument("--alpn", required=True, metavar="LIST", help="comma-separated ALPN protocols")
    server.add_argument("--psk", metavar="FILE", help="PSK file, identity:hexkey per line")
    server.add_argument("--backend", choices=("auto", "kernel", "sim"), default="auto")
    server.add_argument("--no-early-data", action="store_true", help="refuse 0-RTT")
    server.add_argument("--retry", action="store_true",
                        help="validate client addresses: answer token-less Initials with a Retry")
    server.add_argument("--handshake-workers", type=positive_int, default=None, metavar="N",
                        help="handshakes at once, each on a thread of a fixed pool; further connections wait "
                             "in the listen backlog (default: 64)")
    server.add_argument("--backlog", type=positive_int, default=None, metavar="N",
                        help="connections waiting to be accepted (listen backlog; default: 512)")

    client = commands.add_parser("client", help="handshake with a QUIC server and exchange stream data")
    client.add_argument("server", metavar="ADDR:PORT")
    client.add_argument("--alpn", required=True, metavar="LIST")
    client.add_argument("--cafile", help="trust anchors (PEM); default: the system store")
    client.add_argument("--sni", help="server name to send and verify (default: the address)")
    client.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    client.add_argument("--session", metavar="FILE",
                        help="resume from FILE if it exists; store the new ticket in it")
    client.add_argument("--early-data", metavar="TEXT", help="send TEXT as 0-RTT when resuming")
    client.add_argument("--data", metavar="TEXT", help="send TEXT on a stream and print the echo")
    client.add_argument("--psk", metavar="FILE", help="PSK file, identity:hexkey per line")
    client.add_argument("--backend", choices=("auto", "kernel", "sim"), default="auto")
    client.add_argument("--timeout", type=seconds_type(1e6), default=30.0, metavar="SECONDS",
                        help="give up on a handshake after SECONDS (default: 30)")
    status = commands.add_parser("status", help="counters and recent handshakes of a running daemon (D-Bus)")
    status.add_argument("--session", action="store_true", help="ask on the session bus, not the system bus")
    status.add_argument("--bus", metavar="ADDRESS", help="D-Bus address to ask on")
    daemon = commands.add_parser("daemon", help="serve the kernel's handshake upcalls (a tlshd drop-in)")
    daemon.add_argument("-c", "--config", metavar="PATH", help="configuration file (default: tlshd's search)")
    daemon.add_argument("--workers", type=positive_int, metavar="N",
                        help="worker processes (default: [quichsd] workers)")
    daemon.add_argument("--foreground", action="store_true",
                        help="log to stderr instead of syslog (LOG_AUTH)")
    daemon.add_argument("-s", "--stderr", action="store_true",
                        help="log to syslog and also to stderr (as tlshd -s)")
    daemon.add_argument("-v", "--version", action="store_true",
                        help="print the version and exit (as tlshd -v)")
    from .spec.cli import add_arguments as add_spec_arguments

    add_spec_arguments(commands.add_parser("spec", help="check a QUIC server's conformance (h3spec-style)"))
    for sub in commands.choices.values():
        sub.epilog, sub.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds_type(most: float) -> Callable[[str], float]:
    """An argparse type: a duration in seconds, more than 0 and at most `most`."""
    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
        if not 0 < value <= most:
            raise argparse.ArgumentTypeError(f"expected 0 < seconds <= {most:g}, got {text}")
        return value
    return seconds


def _daemon_logging(foreground: bool, verbose: int, also_stderr: bool = False) -> None:
    from .daemon import logsetup

    level = logging.INFO - 10 * verbose if verbose else logging.INFO
    logsetup.setup(foreground, level, also_stderr)


def run_daemon(args: argparse.Namespace) -> int:
    from . import __version__
    from .daemon import config as cfgmod
    from .daemon.netlink import HandshakeFamily
    from .daemon.privileges import PrivilegeError
    from .daemon.service import build_supervisor
    from .daemon.supervisor import FAMILY_MISSING_MESSAGE
    from .daemon.worker import NetlinkSource

    if args.version:
        print(f"quichsd, version {__version__} (a tlshd drop-in for QUIC)", file=sys.stderr)
        return 0
    _daemon_logging(args.foreground, args.verbose, args.stderr)
    log = logging.getLogger("quichsd")
    try:
        config, path = cfgmod.load(args.config)
    except cfgmod.ConfigError as exc:
        log.error("Failed to load config file: %s", exc)
        log.log(cfgmod.NOTICE, "Shutting down.")
        return 1

    def preflight() -> None:
        HandshakeFamily(join=True).close()  # FamilyMissing: the clear message, non-zero exit

    try:
        supervisor = build_supervisor(NetlinkSource, config, path, workers=args.workers, preflight=preflight)
    except PrivilegeError as exc:
        log.error("%s", exc.strerror)
        log.log(cfgmod.NOTICE, "Shutting down.")
        return 1
    status = supervisor.run()
    if status:
        reason = FAMILY_MISSING_MESSAGE if status == 2 else f"exit {status}"
        print(f"quichsd daemon: {reason}", file=sys.stderr)
    return status


def print_status(snapshot: dict[str, Any], out: TextIO) -> None:
    counters = snapshot["counters"]
    print(f"quichsd {snapshot.get('version') or ''}".rstrip(), file=out)
    for key in ("accepted", "succeeded", "failed", "in_flight"):
        print(f"  {key:10s} {counters.get(key, 0)}", file=out)
    for key in sorted(k for k in counters if k.startswith("failed.")):
        print(f"  {key:10s} {counters[key]}", file=out)
    for entry in snapshot["recent"]:
        print(f"  {entry['role']:6s} {entry['peer']:24s} alpn={entry['alpn'] or '-'} "
              f"suite={entry['suite'] or '-'} {entry['duration_ms']:.1f} ms "
              f"status={entry['status_name'] or entry['status']}", file=out)


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; every error ends here as one line on stderr and a status of EPILOG."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"quichsd {args.command}"
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose,
                        format="%(levelname)s %(name)s: %(message)s",
                        handlers=[_LineHandler()])
    try:
        return run(args)
    except KeyboardInterrupt:
        return _interrupted(prog)
    except BrokenPipeError:
        return EXIT_FAILED  # whoever read our output has gone: nobody to tell
    except Exception as exc:
        if _raised_by_ctrl_c(exc):
            return _interrupted(prog)
        from . import echo
        from .handshake import HandshakeError

        if isinstance(exc, echo.UsageError):
            return _fail(prog, str(exc), EXIT_USAGE)
        if isinstance(exc, echo.ClientFailed):
            return _fail(prog, str(exc), EXIT_FAILED)
        if isinstance(exc, HandshakeError):
            return _fail(prog, exc.strerror or str(exc), EXIT_FAILED)
        if isinstance(exc, OSError):
            return _fail(prog, _os_error(args, exc), EXIT_FAILED)
        if args.verbose:
            raise
        return _fail(prog, f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)",
                     EXIT_SOFTWARE)


def _interrupted(prog: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C during the exit stays quiet
    return _fail(prog, "interrupted", EXIT_INTERRUPTED)


def _raised_by_ctrl_c(exc: BaseException) -> bool:
    """Ctrl-C's KeyboardInterrupt can land between a lock's acquire and its release in the
    code it interrupts (threading.Condition.wait in a socket wait); the `with` block then
    fails with RuntimeError("cannot release un-acquired lock") while handling it. That is
    still the user's Ctrl-C, not a bug: the KeyboardInterrupt is in the error's context."""
    seen: BaseException | None = exc.__context__
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__context__
    return False


class _LineHandler(logging.StreamHandler[TextIO]):
    """Log records to stderr under the same lock as the rest of our output (echo.say), so
    a record and an output line of another thread never share a line."""

    def emit(self, record: logging.LogRecord) -> None:
        from .echo import say

        try:
            say(self.stream, self.format(record))
        except Exception:
            self.handleError(record)


def _fail(prog: str, message: str, status: int) -> int:
    from .echo import say

    with contextlib.suppress(OSError, ValueError):
        say(sys.stderr, f"{prog}: {message}")
    return status


def _os_error(args: argparse.Namespace, exc: OSError) -> str:
    """A system call's refusal, said as what we were doing."""
    reason = exc.strerror or str(exc)
    if args.command == "server":
        return f"cannot listen on {args.listen}: {reason}"
    if args.command == "client":
        return f"cannot connect to {args.server}: {reason}"
    return reason


def run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import run_demo

        return run_demo()
    if args.command == "daemon":
        return run_daemon(args)
    if args.command == "spec":
        from .spec.cli import run_spec

        return run_spec(args, sys.stdout, sys.stderr)
    if args.command == "status":
        from .daemon.dbus_service import DbusServiceError, read_status

        try:
            snapshot = read_status(args.bus, system=not (args.session or args.bus))
        except (DbusServiceError, OSError) as exc:
            return _fail("quichsd status", f"no daemon answered: {exc}", EXIT_FAILED)
        print_status(snapshot, sys.stdout)
        return EXIT_OK
    from . import echo

    if args.command == "server":
        if not args.psk and not (args.cert and args.key):
            raise echo.UsageError("needs --cert and --key, or --psk")
        options = echo.ServerOptions(args.listen, args.alpn, args.cert, args.key, args.psk, args.backend,
                                     not args.no_early_data, retry=args.retry)
        if args.handshake_workers is not None:
            options.handshake_workers = args.handshake_workers
        if args.backlog is not None:
            options.backlog = args.backlog
        return echo.serve(options, sys.stdout)
    if args.command == "client":
        client = echo.ClientOptions(args.server, args.alpn, args.cafile, args.sni, args.insecure,
                                    args.session, args.early_data, args.data, args.psk, args.backend,
                                    args.timeout)
        return echo.run_client(client, sys.stdout)
    raise echo.UsageError(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
