"""Run the fuzz targets under atheris (libFuzzer), each for a bounded time, and report.

    python -m fuzz.run [--seconds N] [TARGET ...]     every target (or those named), one at
                                                      a time; a line per target, a summary
    python -m fuzz.run --child TARGET --seconds N     one target in this process (what the
                                                      line above starts per target)

Per target: executions, coverage (libFuzzer's `cov`: edges of quichsd's instrumented code,
and `ft`: features) and crashes. libFuzzer stops a target at its first crash and writes the
input to fuzz/artifacts/<target>/; the summary then fails (exit 1) and names the file.
New interesting inputs go to fuzz/work/<target>/ (kept between runs, not committed); the
committed seeds (fuzz/corpus/) and regressions (fuzz/regressions/) are read, never written.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import TARGETS

HERE = Path(__file__).resolve().parent
INPUT_TIMEOUT = 10  # seconds one input may take before libFuzzer calls it a hang


def dirs(target: str) -> dict[str, Path]:
    return {name: HERE / name / target for name in ("corpus", "regressions", "work", "artifacts")}


# -- one target, in this process ---------------------------------------------------------------


def child(target: str, seconds: int) -> None:
    import atheris  # a test-only dependency: `make fuzz` installs it into the venv

    # Instrument quichsd as the harness imports it: nothing of quichsd is loaded before.
    assert not any(name == "quichsd" or name.startswith("quichsd.") for name in sys.modules)
    with atheris.instrument_imports(include=["quichsd"]):
        module = importlib.import_module(TARGETS[target])
    d = dirs(target)
    d["work"].mkdir(parents=True, exist_ok=True)
    d["artifacts"].mkdir(parents=True, exist_ok=True)
    corpora = [str(d["work"])] + [str(d[n]) for n in ("corpus", "regressions") if d[n].is_dir()]
    argv = [sys.argv[0], *corpora, f"-max_total_time={seconds}", f"-timeout={INPUT_TIMEOUT}",
            "-rss_limit_mb=2048", f"-artifact_prefix={d['artifacts']}/", "-print_final_stats=1"]
    atheris.Setup(argv, module.one_input)
    atheris.Fuzz()


# -- every target, each in its own process -----------------------------------------------------


@dataclass
class Result:
    target: str
    seconds: float
    executions: int = 0
    cov: int | None = None
    ft: int | None = None
    corpus: int | None = None
    crashed: bool = False
    artifact: str | None = None
    log: str = ""

    def line(self) -> str:
        cov = "cov n/a" if self.cov is None else f"cov {self.cov} ft {self.ft}"
        corp = "" if self.corpus is None else f", corpus {self.corpus}"
        crash = f"1 crash ({self.artifact or 'see ' + self.log})" if self.crashed else "0 crashes"
        return (f"fuzz: {self.target}: {self.executions} executions, {cov}{corp}, {crash} "
                f"({self.seconds:.0f} s)")


def parse(result: Result, output: str, returncode: int) -> Result:
    """Fill `result` from libFuzzer's output."""
    stat = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    runs = re.findall(r"^#(\d+)\s", output, re.M)
    done = re.search(r"Done (\d+) runs", output)
    if stat:
        result.executions = int(stat.group(1))
    elif done:
        result.executions = int(done.group(1))
    else:
        result.executions = int(runs[-1]) if runs else 0
    cov = re.findall(r"cov: (\d+) ft: (\d+)", output)
    if cov:
        result.cov, result.ft = map(int, cov[-1])
    corp = re.findall(r"corp: (\d+)/", output)
    if corp:
        result.corpus = int(corp[-1])
    artifact = re.search(r"Test unit written to (\S+)", output)
    result.artifact = artifact.group(1) if artifact else None
    result.crashed = returncode != 0 or artifact is not None
    return result


def run_target(target: str, seconds: int) -> Result:
    d = dirs(target)
    d["work"].mkdir(parents=True, exist_ok=True)
    log = HERE / "work" / f"{target}.log"
    start = time.monotonic()
    cmd = [sys.executable, "-m", "fuzz.run", "--child", target, "--seconds", str(seconds)]
    env = dict(os.environ, PYTHONHASHSEED="0")
    # A hung target (libFuzzer's own -max_total_time not honoured) still ends.
    try:
        proc = subprocess.run(cmd, cwd=HERE.parent, env=env, capture_output=True, text=True,
                              timeout=seconds + 120)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        code = -1
    log.write_text(output)
    result = Result(target, time.monotonic() - start, log=str(log))
    return parse(result, output, code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    ap.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    ap.add_argument("--child", metavar="TARGET", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.seconds)
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    try:
        import atheris  # noqa: F401 - only whether it imports (the children use it)
    except ImportError:
        print("fuzz: atheris is not installed (make fuzz installs it into the venv)", file=sys.stderr)
        return 2
    start = time.monotonic()
    results = []
    for target in args.targets or list(TARGETS):
        result = run_target(target, args.seconds)
        print(result.line(), flush=True)
        results.append(result)
    crashes = sum(r.crashed for r in results)
    total = sum(r.executions for r in results)
    print(f"fuzz: {len(results)} targets, {total} executions, {crashes} crashes "
          f"in {time.monotonic() - start:.0f} s", flush=True)
    for r in results:
        if r.crashed:
            artifact = r.artifact or "(none written)"
            print(f"fuzz: {r.target} crashed; input: {artifact}; log: {r.log}", flush=True)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
