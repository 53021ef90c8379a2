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
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def guest_main(n: int, warmup: int, rounds: int, transport: str = "quic") -> int:
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
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, start in (("quichsd", lambda d: quichsd_daemon(d, config, workers=os.cpu_count() or 1)),
                            ("tlshd", lambda d: tlshd_daemon(d, config))):
            with start(Path(tempfile.mkdtemp(dir=work))) as daemon:
                for mode, command in modes.items():
                    upcall(f"{command} n={warmup} timeout=30000")
                    report = upcall(f"{command} n={n} timeout=30000")
                    if report.ok != n:
                        print(f"{name} {mode}: only {report.ok}/{n} handshakes succeeded "
                              f"(first status {report.first_status})\n{daemon.output()[-3000:]}")
                        return 1
                    rate = n / (report.usecs / 1e6)
                    rates.setdefault((name, mode), []).append(rate)
                    print(f"{name:8} {mode:5} {rate:7.2f} handshakes/s ({n} in {report.usecs / 1e6:.1f} s)",
                          flush=True)
    ratios = {}
    for mode in modes:
        ours = sorted(rates[("quichsd", mode)])[len(rates[("quichsd", mode)]) // 2]
        theirs = sorted(rates[("tlshd", mode)])[len(rates[("tlshd", mode)]) // 2]
        ratios[mode] = ours / theirs
        print(f"{mode}: quichsd {ours:.2f}/s, tlshd {theirs:.2f}/s (medians of {rounds}): {ratios[mode]:.2f}")
    label = "kernel_daemon" if transport == "quic" else "ktls_daemon"
    print(f"{label}: quichsd/tlshd={min(ratios.values()):.2f}")
    return 0


def host_main(args: argparse.Namespace) -> int:
    from tests.qemu import run, vm
    argv = [str(ROOT / "bench" / "kernel_daemon.py"), "--guest", "-n", str(args.n),
            "--warmup", str(args.warmup), "--rounds", str(args.rounds), "--transport", args.transport]
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
    args = parser.parse_args()
    if args.guest:
        return guest_main(args.n, args.warmup, args.rounds, args.transport)
    return host_main(args)


if __name__ == "__main__":
    sys.exit(main())
