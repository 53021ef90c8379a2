"""`make qemu`: the real-kernel tier.

Prepares Debian's kernel (tests/qemu/kernel.py), builds our test module against its headers,
adds the QUIC module and peers if a built lxin/quic tree is present, boots once under QEMU
and runs the whole guest suite (pytest, inside the guest) in that boot. The guest's pytest
output streams to this terminal, its JUnit XML lands in the results directory, and the exit
status is pytest's.

Third-party code is never built here (none of it, nor a recipe for it, lives in this repo):
the QUIC tier uses a lxin/quic tree someone built by hand against the headers this harness
prepares (`python -m tests.qemu.run --print-headers` prints their path), found at
$QUICHSD_QUIC_SRC or ~/.cache/quichsd/quic-src; tlshd is a binary at $QUICHSD_TLSHD or
~/.cache/quichsd/ktls-utils/src/tlshd/tlshd. Absent, those tests skip and say so.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.qemu import kernel as kernel_mod
from tests.qemu import vm

REPO = Path(__file__).resolve().parents[2]
KMOD_SRC = Path(__file__).with_name("kmod")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "quichsd"
# The guest suite: our own tier, then every kernel-backend test of the host suite.
GUEST_TESTS = ("tests/qemu/guest", "tests/sock", "tests/unit/test_sock_kernel_abi.py")
KERNEL_SELECTION = "kernel or qemu or Kernel"


def build_kmod(kernel: kernel_mod.Kernel) -> Path:
    """Our upcall test module, built out of the source tree (in a directory of this run's
    own: runs may overlap), installed under updates/ by an atomic rename."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kmod-build-", dir=CACHE) as tmp:
        build = Path(tmp) / "src"
        shutil.copytree(KMOD_SRC, build)
        subprocess.run(["make", "-s", "-C", str(kernel.headers), f"M={build}",
                        "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"], check=True)
        dest = kernel.updates / "quichsd_upcall.ko"
        staged = kernel.updates / f".quichsd_upcall.ko.{os.getpid()}"
        shutil.copy2(build / "quichsd_upcall.ko", staged)
        os.replace(staged, dest)
    return dest


def _vermagic(path: Path) -> str:
    out = subprocess.run(["modinfo", "-F", "vermagic", str(path)], capture_output=True, text=True)
    return out.stdout.split(" ")[0].strip()


def find_quic_tree() -> tuple[Path | None, str]:
    """A built lxin/quic tree (quic.ko for our kernel inside), or None and why not."""
    candidates = [os.environ.get("QUICHSD_QUIC_SRC"), str(CACHE / "quic-src")]
    for cand in filter(None, candidates):
        tree = Path(cand)
        ko = tree / "modules" / "net" / "quic" / "quic.ko"
        if not ko.exists():
            continue
        if _vermagic(ko) != kernel_mod.KREL:
            return None, f"{ko} is built for {_vermagic(ko)!r}, not {kernel_mod.KREL!r}"
        return tree, ""
    return None, ("no built lxin/quic tree: fetch github:lxin/quic, build its modules against "
                  "the headers `python -m tests.qemu.run --print-headers` prints "
                  "(CONFIG_IP_QUIC=m CONFIG_IP_QUIC_TEST=m) and libquic with --without-modules, "
                  "in $QUICHSD_QUIC_SRC or ~/.cache/quichsd/quic-src")


def install_quic(kernel: kernel_mod.Kernel, tree: Path | None) -> None:
    for name in ("quic.ko", "quic_sample_test.ko"):
        dest = kernel.updates / name
        built = tree / "modules/net/quic" / name if tree is not None else None
        if built is None or not built.exists():
            dest.unlink(missing_ok=True)
            continue
        staged = kernel.updates / f".{name}.{os.getpid()}"
        shutil.copy2(built, staged)
        os.replace(staged, dest)


def find_tlshd() -> Path | None:
    for cand in (os.environ.get("QUICHSD_TLSHD"), str(CACHE / "ktls-utils/src/tlshd/tlshd")):
        if cand and os.access(cand, os.X_OK) and Path(cand).is_file():
            return Path(cand)
    return None


def guest_script(python: str, pytest_args: list[str]) -> str:
    args = " ".join(shlex.quote(a) for a in pytest_args)
    return f"""
cd {shlex.quote(str(REPO))}
export PYTHONDONTWRITEBYTECODE=1 QUICHSD_GUEST=1 PYTHONUNBUFFERED=1
{shlex.quote(python)} -m pytest -p no:cacheprovider --color=no -o console_output_style=classic \\
    -rs --junitxml=/run/quichsd-results/junit.xml {args}
"""


def summarize(junit: Path) -> str:
    """pytest's JUnit XML counts an xfail as skipped (a <skipped type="pytest.xfail"> in its
    testcase); the summary counts it apart, so a skip is never an expected failure."""
    if not junit.exists():
        return "no JUnit report from the guest"
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    totals = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    passed = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    xfailed = sum(1 for s in root.iter("skipped") if s.get("type") == "pytest.xfail")
    return (f"guest: {passed} passed, {totals['failures']} failed, {totals['errors']} errors, "
            f"{totals['skipped'] - xfailed} skipped, {xfailed} xfailed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.qemu.run", description=__doc__.split("\n")[0])
    parser.add_argument("--print-headers", action="store_true",
                        help="prepare the kernel and print its header tree (for building modules)")
    parser.add_argument("--timeout", type=float, default=1380, help="seconds for the whole boot")
    parser.add_argument("--results", type=Path, help="where the guest writes its reports")
    parser.add_argument("pytest_args", nargs="*", help="passed to the guest's pytest "
                        "(default: the whole guest suite)")
    opts, extra = parser.parse_known_args(argv)
    opts.pytest_args = [*opts.pytest_args, *extra]
    if not shutil.which("qemu-system-x86_64"):
        print("qemu: qemu-system-x86_64 is missing (Debian: qemu-system-x86)", file=sys.stderr)
        return 2
    try:
        kernel = kernel_mod.prepare()
        if opts.print_headers:
            print(kernel.headers)
            return 0
        build_kmod(kernel)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"qemu: cannot prepare the guest kernel: {exc}", file=sys.stderr)
        return 2
    tree, why = find_quic_tree()
    install_quic(kernel, tree)
    kernel.depmod()
    env = {"QUICHSD_QUIC_SRC": str(tree) if tree else "", "QUICHSD_NO_QUIC_TREE": why}
    tlshd = find_tlshd()
    env["QUICHSD_TLSHD"] = str(tlshd) if tlshd else ""
    if tree is not None:
        commit = tree / ".commit"
        print(f"qemu: lxin/quic tree {tree}"
              + (f" (commit {commit.read_text().strip()})" if commit.exists() else ""))
    else:
        print(f"qemu: QUIC tier skipped: {why}")
    print(f"qemu: tlshd {tlshd or 'absent (QUICHSD_TLSHD): its comparisons skip'}")
    pytest_args = opts.pytest_args or [*GUEST_TESTS, "-k", KERNEL_SELECTION]
    results = opts.results or vm.results_dir()
    boot = vm.Boot(kernel, guest_script(sys.executable, pytest_args), timeout=opts.timeout, env=env)
    status = boot.run(results)
    print(summarize(results / "junit.xml"))
    print(f"qemu: results in {results}")
    return status


if __name__ == "__main__":
    sys.exit(main())
