"""The `quichsd` command line."""
from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quichsd", description="Userspace TLS 1.3 handshake agent for in-kernel QUIC")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="handshakes in memory, then over loopback sockets, showing what was negotiated")

    server = commands.add_parser("server", help="accept QUIC connections, complete handshakes, echo stream data")
    server.add_argument("--listen", required=True, metavar="ADDR:PORT")
    server.add_argument("--cert", help="certificate chain (PEM)")
    server.add_argument("--key", help="private key (PEM)")
    server.add_argument("--alpn", required=True, metavar="LIST", help="comma-separated ALPN protocols")
    server.add_argument("--psk", metavar="FILE", help="PSK file, identity:hexkey per line")
    server.add_argument("--backend", choices=("auto", "kernel", "sim"), default="auto")
    server.add_argument("--no-early-data", action="store_true", help="refuse 0-RTT")
    server.add_argument("--retry", action="store_true",
                        help="validate client addresses: answer token-less Initials with a Retry")

    client = commands.add_parser("client", help="handshake with a QUIC server and exchange stream data")
    client.add_argument("server", metavar="ADDR:PORT")
    client.add_argument("--alpn", required=True, metavar="LIST")
    client.add_argument("--cafile", help="trust anchors (PEM); default: the system store")
    client.add_argument("--sni", help="server name to send and verify (default: the address)")
    client.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    client.add_argument("--session", metavar="FILE", help="resume from FILE if it exists; store the new ticket in it")
    client.add_argument("--early-data", metavar="TEXT", help="send TEXT as 0-RTT when resuming")
    client.add_argument("--data", metavar="TEXT", help="send TEXT on a stream and print the echo")
    client.add_argument("--psk", metavar="FILE", help="PSK file, identity:hexkey per line")
    client.add_argument("--backend", choices=("auto", "kernel", "sim"), default="auto")
    status = commands.add_parser("status", help="counters and recent handshakes of a running daemon (D-Bus)")
    status.add_argument("--session", action="store_true", help="ask on the session bus, not the system bus")
    status.add_argument("--bus", metavar="ADDRESS", help="D-Bus address to ask on")
    daemon = commands.add_parser("daemon", help="serve the kernel's handshake upcalls (a tlshd drop-in)")
    daemon.add_argument("-c", "--config", metavar="PATH", help="configuration file (default: tlshd's search)")
    daemon.add_argument("--workers", type=int, metavar="N", help="worker processes (default: [quichsd] workers)")
    daemon.add_argument("--foreground", action="store_true", help="log to stderr instead of syslog (LOG_AUTH)")
    daemon.add_argument("-s", "--stderr", action="store_true", help="log to syslog and also to stderr (as tlshd -s)")
    daemon.add_argument("-v", "--version", action="store_true", help="print the version and exit (as tlshd -v)")
    return parser


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
        print(f"quichsd daemon: {FAMILY_MISSING_MESSAGE}" if status == 2 else f"quichsd daemon: exit {status}",
              file=sys.stderr)
    return status


def print_status(snapshot: dict, out) -> None:  # noqa: ANN001
    counters = snapshot["counters"]
    print(f"quichsd {snapshot.get('version') or ''}".rstrip(), file=out)
    for key in ("accepted", "succeeded", "failed", "in_flight"):
        print(f"  {key:10s} {counters.get(key, 0)}", file=out)
    for key in sorted(k for k in counters if k.startswith("failed.")):
        print(f"  {key:10s} {counters[key]}", file=out)
    for entry in snapshot["recent"]:
        print(f"  {entry['role']:6s} {entry['peer']:24s} alpn={entry['alpn'] or '-'} suite={entry['suite'] or '-'} "
              f"{entry['duration_ms']:.1f} ms status={entry['status_name'] or entry['status']}", file=out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from .demo import run_demo

        return run_demo()
    if args.command == "daemon":
        return run_daemon(args)
    if args.command == "status":
        from .daemon.dbus_service import DbusServiceError, read_status

        try:
            snapshot = read_status(args.bus, system=not (args.session or args.bus))
        except (DbusServiceError, OSError) as exc:
            print(f"quichsd status: no daemon answered: {exc}", file=sys.stderr)
            return 1
        print_status(snapshot, sys.stdout)
        return 0
    from . import echo

    if args.command == "server":
        if not args.psk and not (args.cert and args.key):
            print("quichsd server: needs --cert and --key, or --psk", file=sys.stderr)
            return 2
        return echo.serve(echo.ServerOptions(args.listen, args.alpn, args.cert, args.key, args.psk,
                                             args.backend, not args.no_early_data, retry=args.retry), sys.stdout)
    if args.command == "client":
        return echo.run_client(echo.ClientOptions(args.server, args.alpn, args.cafile, args.sni, args.insecure,
                                                  args.session, args.early_data, args.data, args.psk,
                                                  args.backend), sys.stdout)
    return 2


if __name__ == "__main__":
    sys.exit(main())
