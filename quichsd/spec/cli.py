"""`quichsd spec HOST PORT`: the subcommand's options and its run."""
from __future__ import annotations

import argparse
import time
from typing import TextIO

from ..cli import positive_int, seconds_type
from . import DEFAULT_JOBS, DEFAULT_TIMEOUT

__all__ = ["add_arguments", "run_spec"]

DESCRIPTION = """\
Check a QUIC server's conformance: each check opens a fresh connection on which our client
breaks one MUST of RFC 9000, 9001 or 8446, and passes only if the server closes the
connection with exactly the error the RFC names. One line per check, then a summary;
exit status 0 when every check passed, 1 when any failed (or the host does not resolve),
2 for bad usage. --list shows the checks."""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("host", nargs="?", metavar="HOST", help="server name or address")
    parser.add_argument("port", nargs="?", type=_port, metavar="PORT")
    parser.add_argument("--alpn", default="h3", metavar="LIST",
                        help="comma-separated ALPN protocols to offer (default: h3)")
    parser.add_argument("--timeout", type=seconds_type(600), default=DEFAULT_TIMEOUT, metavar="S",
                        help="how long each check waits for the server's close "
                             f"(default: {DEFAULT_TIMEOUT:g})")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    trust.add_argument("--ca", metavar="FILE", help="trust anchors (PEM); default: the system store")
    parser.add_argument("--sni", metavar="NAME", help="server name to send and verify (default: HOST)")
    parser.add_argument("-k", metavar="NAMES", dest="names",
                        help="run only the checks whose name contains one of these (comma-separated)")
    parser.add_argument("-j", "--jobs", type=positive_int, default=DEFAULT_JOBS, metavar="N",
                        help=f"connections at once (default: {DEFAULT_JOBS})")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")


def _fail(out: TextIO, message: str, status: int) -> int:
    print(f"quichsd spec: {message}", file=out)
    return status


def run_spec(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..tls.certs import TrustStore
    from .checks import select
    from .outcome import Verdict
    from .probe import Settings
    from .runner import SpecError, expected_text, report, resolve, run_checks

    checks = select(args.names)
    if not checks:
        return _fail(err, f"no check name contains any of {args.names!r} (--list shows them)", 2)
    if args.list:
        for check in checks:
            print(f"{check.name} ({check.section}): {check.does}; expects {expected_text(check)}", file=out)
        return 0
    if args.host is None or args.port is None:
        return _fail(err, "needs HOST and PORT (or --list)", 2)
    alpns = tuple(a.strip().encode() for a in args.alpn.split(","))
    if not all(0 < len(a) < 256 for a in alpns):
        return _fail(err, f"--alpn: expected a comma-separated list of protocol names, got {args.alpn!r}", 2)
    trust = None
    if args.ca:
        try:
            trust = TrustStore.from_file(args.ca)
        except Exception as exc:  # OSError, or cryptography's parse errors
            return _fail(err, f"--ca {args.ca}: cannot use it: {exc}", 2)
    try:
        target = resolve(args.host, args.port)
    except SpecError as exc:
        return _fail(err, str(exc), 1)
    if args.sni:
        target = type(target)(target.family, target.address, args.sni)
    settings = Settings(alpns, verify=not args.insecure, trust=trust, timeout=args.timeout)
    started = time.monotonic()
    results = run_checks(checks, target, settings, args.jobs)
    report(checks, results, out, time.monotonic() - started)
    return 0 if all(r.verdict is Verdict.PASS for r in results) else 1
