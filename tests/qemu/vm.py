"""Boot the guest kernel under QEMU on this machine's own root filesystem, run one script,
power off.

The initramfs (busybox-static) loads the 9p and overlay modules, mounts the host's root over
9p read-only as the lower layer of an overlayfs with a tmpfs upper, and `switch_root`s into
it (a chroot would break the kernel's own module autoload). A second, writable 9p share
carries the script in and the results out. The guest kernel's modules stay in the host-side
cache: /proc/sys/kernel/modprobe points at a helper that runs `modprobe -d CACHE`.
"""
from __future__ import annotations

import io
import lzma
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.qemu.kernel import KREL, Kernel

GUEST_INIT = Path(__file__).with_name("guest_init.sh")
REPO = Path(__file__).resolve().parents[2]  # the tree the guest runs (guest_init.sh keeps it visible)
INITRAMFS_MODULES = ("netfs", "9pnet", "9pnet_virtio", "9p", "overlay")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /modules/$m.ko || echo "initramfs: insmod $m failed"; done
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /lower || \\
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288 hostroot /lower
mount -t tmpfs -o size=1G tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot
mkdir -p /newroot/run/quichsd-results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 results /newroot/run/quichsd-results
umount /proc /sys /dev 2>/dev/null
exec switch_root /newroot /bin/sh /run/quichsd-results/init.sh
"""


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data); a symlink's data is its target."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        header = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0))
        out.write(header.encode() + raw)
        out.write(b"\0" * (-(110 + len(raw)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def build_initramfs(kernel: Kernel, dest: Path) -> Path:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox not found: install Debian's busybox-static")
    entries: list[tuple[str, int, bytes]] = [
        (d, 0o040755, b"") for d in ("bin", "dev", "proc", "sys", "modules")]
    entries.append(("bin/busybox", 0o100755, Path(busybox).read_bytes()))
    entries.append(("bin/sh", 0o120777, b"busybox"))
    for name in INITRAMFS_MODULES:
        path = kernel.module_file(name)
        data = path.read_bytes()
        if path.suffix == ".xz":
            data = lzma.decompress(data)
        entries.append((f"modules/{name}.ko", 0o100644, data))
    entries.append(("init", 0o100755, INIT.format(modules=" ".join(INITRAMFS_MODULES)).encode()))
    dest.write_bytes(cpio_newc(entries))
    return dest


@dataclass
class Boot:
    """One guest boot that runs `script` (sh) as root and powers off."""

    kernel: Kernel
    script: str
    timeout: float = 1500
    memory: str = "3G"
    cpus: int = 2
    env: dict[str, str] = field(default_factory=dict)

    def run(self, results: Path, log=sys.stdout) -> int:
        """Boot, stream the console to `log`, return the script's exit status (or raise)."""
        results.mkdir(parents=True, exist_ok=True)
        initrd = build_initramfs(self.kernel, results / "initramfs.cpio")
        (results / "init.sh").write_text(GUEST_INIT.read_text())
        env_lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items())
        (results / "env.sh").write_text(
            f"export QUICHSD_KERNEL_ROOT={shlex.quote(str(self.kernel.root))}\n"
            f"export QUICHSD_KREL={KREL}\n"
            f"export QUICHSD_REPO={shlex.quote(str(REPO))}\n" + env_lines)
        (results / "run.sh").write_text(self.script)
        (results / "status").unlink(missing_ok=True)
        accel = "kvm:tcg" if os.environ.get("QUICHSD_QEMU_KVM") == "1" else "tcg"
        cmd = [
            "qemu-system-x86_64", "-accel", accel, "-cpu", "qemu64", "-smp", str(self.cpus),
            "-m", self.memory, "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
            "-kernel", str(self.kernel.vmlinuz), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={results},mount_tag=results,security_model=none,multidevs=remap",
        ]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            deadline = started + self.timeout
            for raw in proc.stdout:
                log.write(raw.decode(errors="replace").replace("\r", ""))
                log.flush()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"guest still running after {self.timeout:.0f} s")
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        status = results / "status"
        if not status.exists():
            raise RuntimeError(f"the guest stopped without a result (qemu exit {proc.returncode}, "
                               f"{time.monotonic() - started:.0f} s); its console is above")
        return int(status.read_text().strip() or 1)


def results_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="quichsd-qemu-"))
