"""Kernel-consumer QUIC handshakes per second through the `handshake` upcall, on a real
kernel: quichsd daemon against tlshd, in the same guest boot.

Run on the host: it boots the QEMU tier's guest (tests/qemu) once and runs itself inside.
There our consumer module (tests/qemu/kmod/quichsd_upcall.ko) opens a QUIC listener and, N
times in a row, a client connection to it; both ends ask userspace for their handshake
(tls_client_hello_* and tls_server_hello_* on kernel IPPROTO_QUIC sockets) and wait for
DONE. One daemon serves both ends: `quichsd daemon` (one worker per CPU), then tlshd (built
with QUIC; QUICHSD_TLSHD), in certificate mode (x509, the client verifying the server's name)
and PSK mode. A round of warm-up handshakes precedes each measurement. Under TCG every
figure is far below a real machine's; only the ratio is the result.

Ends with `kernel_daemon: quichsd/tlshd=R`, the lower of the two modes' ratios.

`--transport tcp`: TLS over TCP instead (issue 12): the module's `tcp pair` asks for both ends
of one loopback TCP connection, each daemon does the TLS 1.3 handshake and installs kTLS on
both sockets, in x509, anon (the client verifying the server) and PSK mode (a `psk` key, the
only type tlshd's TCP server finds). Ends with `ktls_daemon: quichsd/tlshd=R`.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def process_cpu(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) of `pids` (all their threads), in seconds; a process gone counts 0."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def guest_busy() -> float:
    """CPU seconds the whole guest spent busy (all CPUs, /proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measurement:
    rate: float  # pairs per second
    # The daemon's CPU per pair (its live processes: quichsd's supervisor and workers; for
    # tlshd only the parent, since its children are reaped unwaited and their time is lost).
    daemon_ms: float
    daemon_sys_ms: float  # the part of daemon_ms in the kernel (its syscalls: TCP, netlink, kTLS)
    guest_ms: float  # the whole guest's busy CPU per pair: daemon, kernel, the module


def measure(daemon: Any, command: str, n: int, warmup: int) -> Measurement | str:
    """`n` pairs of `command` after `warmup` ones: the measurement, or why it failed."""
    from tests.qemu.guest.kernel import upcall

    upcall(f"{command} n={warmup} timeout=30000")
    pids = daemon.pids()
    cpu0, busy0 = process_cpu(pids), guest_busy()
    report = upcall(f"{command} n={n} timeout=30000")
    cpu1, busy1 = process_cpu(pids), guest_busy()
    if report.ok != n:
        return f"only {report.ok}/{n} handshakes succeeded (first status {report.first_status})"
    return Measurement(n / (report.usecs / 1e6), (sum(cpu1) - sum(cpu0)) * 1e3 / n,
                       (cpu1[1] - cpu0[1]) * 1e3 / n, (busy1 - busy0) * 1e3 / n)


def profile(daemon: Any, command: str, n: int, out: Path) -> None:
    """py-spy samples of the daemon's processes (on-CPU only) while `n` pairs run; prints
    the functions with the most samples, own and inclusive."""
    from tests.qemu.guest.kernel import upcall

    spy = Path(sys.executable).with_name("py-spy")
    proc = subprocess.Popen([str(spy), "record", "--nonblocking", "--subprocesses", "-r", "200", "-f", "raw",
                             "--nolineno", "-o", str(out), "-p", str(daemon.proc.pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)  # py-spy attaching (no synchronisation offered; a bench, not a test)
    upcall(f"{command} n={n} timeout=30000")
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in stack.split(";")[1:]]
        total += int(count)
        if frames:
            own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    print(f"profile {command!r}: {total} samples at 200/s over {n} pairs (both ends)")
    for title, counter, top in (("own", own, 25), ("inclusive", inclusive, 45)):
        print(f"  -- {title}")
        for frame, count in counter.most_common(top):
            print(f"  {100 * count / max(total, 1):5.1f}% {frame}")


def guest_main(n: int, warmup: int, rounds: int, transport: str = "quic", with_profile: bool = False,
               workers: int = 0) -> int:
    from cryptography.hazmat.primitives import serialization

    from tests.pki import leaf, test_ca
    from tests.qemu.guest.kernel import (
        add_psk_key,
        add_user_key,
        modprobe,
        quichsd_daemon,
        tlshd_binary,
        tlshd_daemon,
        upcall,
    )

    if transport == "quic":
        modprobe("quic")
    work = Path(tempfile.mkdtemp(prefix="kernel-daemon-"))
    cert, key = leaf("p256")
    (work / "ca.pem").write_bytes(test_ca().cert.public_bytes(serialization.Encoding.PEM))
    (work / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (work / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    psk = (add_user_key if transport == "quic" else add_psk_key)("kernel-daemon-bench", os.urandom(32))
    config = "[authenticate]\nkeyrings = quichsd-test\n\n" + "".join(
        f"[authenticate.{side}]\nx509.truststore = {work}/ca.pem\n"
        f"x509.certificate = {work}/cert.pem\nx509.private_key = {work}/key.pem\n\n"
        for side in ("client", "server"))
    modes = {"x509": "quic pair x509 peername=localhost", "psk": f"quic pair psk psk={psk}"}
    if transport == "tcp":
        modes = {"x509": "tcp pair x509 peername=localhost", "anon": "tcp pair anon peername=localhost",
                 "psk": f"tcp pair psk psk={psk}"}
    try:
        tlshd_binary()
    except BaseException as exc:  # pytest.skip outside pytest
        print(f"kernel_daemon: tlshd absent ({exc}); nothing to compare with")
        return 1
    workers = workers or os.cpu_count() or 1
    starters = {"quichsd": lambda d: quichsd_daemon(d, config, workers=workers),
                "tlshd": lambda d: tlshd_daemon(d, config)}
    results: dict[tuple[str, str], list[Measurement]] = {}
    for r in range(rounds):
        # Alternating which daemon goes first (ABBA...): a drift in the guest's speed over
        # the boot does not favour either.
        for name in (("quichsd", "tlshd") if r % 2 == 0 else ("tlshd", "quichsd")):
            with starters[name](Path(tempfile.mkdtemp(dir=work))) as daemon:
                for mode, command in modes.items():
                    m = measure(daemon, command, n, warmup)
                    if isinstance(m, str):
                        print(f"{name} {mode}: {m}\n{daemon.output()[-3000:]}")
                        return 1
                    results.setdefault((name, mode), []).append(m)
                    print(f"round {r + 1} {name:8} {mode:5} {m.rate:7.2f} pairs/s ({n / m.rate:.1f} s); "
                          f"per pair: daemon CPU {m.daemon_ms:.1f} ms ({m.daemon_sys_ms:.1f} system), "
                          f"guest busy {m.guest_ms:.1f} ms",
                          flush=True)
    if with_profile:
        with starters["quichsd"](Path(tempfile.mkdtemp(dir=work))) as daemon:
            for mode, command in modes.items():
                upcall(f"{command} n={warmup} timeout=30000")
                profile(daemon, command, n, work / f"profile-{mode}.txt")
    return summarise(results, modes, rounds, "kernel_daemon" if transport == "quic" else "ktls_daemon")


def summarise(results: dict[tuple[str, str], list[Measurement]], modes: dict[str, str], rounds: int,
              label: str) -> int:
    """Medians per daemon and mode with their spread, the per-round ratios, and the label line
    (the lowest mode's ratio of medians)."""
    ratios = {}
    for mode in modes:
        ours, theirs = results[("quichsd", mode)], results[("tlshd", mode)]
        for name, ms in (("quichsd", ours), ("tlshd", theirs)):
            rates = sorted(m.rate for m in ms)
            print(f"{mode:5} {name:8} pairs/s median {median(rates):6.2f} "
                  f"(min {rates[0]:.2f}, max {rates[-1]:.2f}); "
                  f"per pair: daemon CPU {median(m.daemon_ms for m in ms):.1f} ms "
                  f"({median(m.daemon_sys_ms for m in ms):.1f} system), "
                  f"guest busy {median(m.guest_ms for m in ms):.1f} ms (medians)")
        per_round = sorted(a.rate / b.rate for a, b in zip(ours, theirs, strict=True))
        ratios[mode] = median(m.rate for m in ours) / median(m.rate for m in theirs)
        print(f"{mode}: quichsd/tlshd {ratios[mode]:.2f} (medians of {rounds}); per-round ratios "
              + " ".join(f"{x:.2f}" for x in per_round))
    print(f"{label}: quichsd/tlshd={min(ratios.values()):.2f}")
    return 0


def host_main(args: argparse.Namespace) -> int:
    from tests.qemu import run, vm
    argv = [str(ROOT / "bench" / "kernel_daemon.py"), "--guest", "-n", str(args.n),
            "--warmup", str(args.warmup), "--rounds", str(args.rounds), "--transport", args.transport,
            "--workers", str(args.workers), *(["--profile"] if args.profile else [])]
    kernel = run.kernel_mod.prepare()
    run.build_kmod(kernel)
    tree, why = run.find_quic_tree()
    if tree is None:
        print(f"kernel_daemon: needs the QUIC module: {why}")
        return 2
    run.install_quic(kernel, tree)
    kernel.depmod()
    tlshd = run.find_tlshd()
    script = (f"cd {shlex.quote(str(ROOT))}\nexport PYTHONDONTWRITEBYTECODE=1 QUICHSD_GUEST=1\n"
              + " ".join(shlex.quote(a) for a in [sys.executable, *argv]) + "\n")
    env = {"QUICHSD_QUIC_SRC": str(tree), "QUICHSD_TLSHD": str(tlshd) if tlshd else ""}
    return vm.Boot(kernel, script, timeout=args.timeout, env=env).run(vm.results_dir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guest", action="store_true", help="(inside the guest) run the measurement")
    parser.add_argument("-n", type=int, default=40, help="handshakes per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=2400)
    parser.add_argument("--transport", choices=("quic", "tcp"), default="quic",
                        help="QUIC handshakes, or TLS over TCP with kTLS")
    parser.add_argument("--workers", type=int, default=0, help="quichsd's workers (default: one per CPU)")
    parser.add_argument("--profile", action="store_true",
                        help="after the rounds, sample quichsd's workers (py-spy) over n more pairs a mode")
    args = parser.parse_args()
    if args.guest:
        return guest_main(args.n, args.warmup, args.rounds, args.transport, args.profile, args.workers)
    return host_main(args)


if __name__ == "__main__":
    sys.exit(main())
