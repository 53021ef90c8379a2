"""Run checks against a server: a fresh connection per check, several at once, all driven
from one selector loop; then one line per check and a summary."""
from __future__ import annotations

import selectors
import socket
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TextIO

from . import DEFAULT_JOBS
from .checks import Check
from .outcome import Observed, Outcome, Result, Verdict, code_name, judge
from .probe import Probe, Settings, Target

__all__ = ["SpecError", "expected_text", "format_result", "report", "resolve", "run_checks",
           "summary"]

class SpecError(Exception):
    """A user error (a host that does not resolve, ...): one line, no traceback."""


def resolve(host: str, port: int) -> Target:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SpecError(f"cannot resolve {host!r}: {exc}") from None
    family, _, _, _, address = infos[0]
    return Target(family, address, host)


def run_checks(checks: Sequence[Check], target: Target, settings: Settings,
               jobs: int = DEFAULT_JOBS) -> list[Result]:
    """Every check's result, in the order of `checks`."""
    waiting = deque(checks)
    active: list[Probe] = []
    results: dict[str, Result] = {}
    with selectors.DefaultSelector() as selector:
        while waiting or active:
            while waiting and len(active) < max(1, jobs):
                check = waiting.popleft()
                probe = _start(check, target, settings, results)
                if probe is not None:
                    active.append(probe)
                    selector.register(probe, selectors.EVENT_READ, probe)
            if not active:
                continue
            now = time.monotonic()
            timeout = max(0.0, min(p.wakeup for p in active) - now)
            for key, _ in selector.select(timeout):
                ready: Probe = key.data
                ready.on_readable(time.monotonic())
            now = time.monotonic()
            for probe in list(active):
                probe.on_time(now)
                if probe.observed is not None:
                    active.remove(probe)
                    selector.unregister(probe)
                    probe.close()
                    results[probe.check.name] = _result(probe.check, probe.observed, now - probe.started)
    return [results[c.name] for c in checks]


def _start(check: Check, target: Target, settings: Settings, results: dict[str, Result]) -> Probe | None:
    now = time.monotonic()
    try:
        probe = Probe(check, target, settings, now)
    except OSError as exc:
        results[check.name] = _result(check, Observed(Outcome.LOCAL, reason=f"cannot start: {exc}"), 0.0)
        return None
    if probe.observed is not None:  # ended at once (our client refused its own hello)
        probe.close()
        results[check.name] = _result(check, probe.observed, 0.0)
        return None
    return probe


def _result(check: Check, observed: Observed, seconds: float) -> Result:
    verdict, detail = judge(check.expect, observed)
    return Result(check.name, check.section, verdict, detail, observed, seconds)


def expected_text(check: Check) -> str:
    return " or ".join(code_name(code) for code in check.expect)


def format_result(result: Result, check: Check) -> str:
    line = f"{result.verdict.value:5s} {result.name} ({result.section})"
    if result.verdict is not Verdict.PASS:
        line += f": expected {expected_text(check)}, got {result.detail}"
    return line


def summary(results: Iterable[Result], seconds: float | None = None) -> str:
    results = list(results)
    passed = sum(r.verdict is Verdict.PASS for r in results)
    errors = sum(r.verdict is Verdict.ERROR for r in results)
    line = f"{passed} passed, {len(results) - passed} failed"
    if errors:
        line += f" ({errors} of them could not be carried out by our client)"
    if seconds is not None:
        line += f" in {seconds:.1f} s"
    return line


def report(checks: Sequence[Check], results: Sequence[Result], out: TextIO,
           seconds: float | None = None) -> None:
    for check, result in zip(checks, results, strict=False):
        print(format_result(result, check), file=out)
    print(summary(results, seconds), file=out)
