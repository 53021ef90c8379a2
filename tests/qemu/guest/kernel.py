"""Guest-side helpers: modules, our upcall test module, handshake daemons, keys."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MODPROBE = "/run/quichsd-modprobe"
UPCALL = "/proc/quichsd_upcall"
REPO = Path(__file__).resolve().parents[3]


def modprobe(name: str, *params: str, remove: bool = False) -> None:
    argv = [MODPROBE, *(["-r"] if remove else []), name, *params]
    subprocess.run(argv, check=True, capture_output=True)


def quic_tree() -> Path:
    """The built lxin/quic tree the host found, or skip saying what to provide."""
    tree = os.environ.get("QUICHSD_QUIC_SRC")
    if not tree:
        pytest.skip(os.environ.get("QUICHSD_NO_QUIC_TREE") or "no lxin/quic tree (QUICHSD_QUIC_SRC)")
    return Path(tree)


@pytest.fixture(scope="module")
def quic_module() -> None:
    """lxin/quic's module loaded for a test module (`pytestmark = usefixtures("quic_module")`),
    or skip saying what to provide."""
    from quichsd.sock.kernel import kernel_quic_available

    quic_tree()
    modprobe("quic")
    if not kernel_quic_available():
        pytest.skip("IPPROTO_QUIC still unavailable after modprobe quic")


def tlshd_binary() -> Path:
    path = os.environ.get("QUICHSD_TLSHD")
    if not path:
        pytest.skip("no tlshd built with QUIC: build ktls-utils (fetch github:oracle/ktls-utils) "
                    "and give its src/tlshd/tlshd as QUICHSD_TLSHD or ~/.cache/quichsd/ktls-utils")
    return Path(path)


# ---- our consumer module -------------------------------------------------------------

@dataclass
class Side:
    status: int            # 0 or a negative errno, as the kernel hands it to the consumer
    peerid: int


@dataclass
class Exchange:
    """data=N on a TCP pair: the bytes that arrived intact each way (or a negative errno;
    -EBADMSG: they arrived but differ) and the upper-layer protocol on each socket."""
    size: int
    client_to_server: int
    server_to_client: int
    ulp: str               # "<client's>/<server's>", "tls/tls" once kTLS is installed


@dataclass
class Report:
    sides: dict[str, Side] = field(default_factory=dict)
    exchange: Exchange | None = None
    done: int = 0
    ok: int = 0
    cancelled: int = 0
    first_status: int = 0
    usecs: int = 0


def upcall(command: str) -> Report:
    """Run one command of quichsd_upcall.ko (see its source) and parse its report."""
    if not os.path.exists(UPCALL):
        modprobe("quichsd_upcall")
    fd = os.open(UPCALL, os.O_RDWR)
    try:
        os.write(fd, command.encode())
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 8192).decode()
    finally:
        os.close(fd)
    report = Report()
    for line in text.splitlines():
        fields = dict(word.split("=", 1) for word in line.split())
        if "error" in fields:
            err = -int(fields["error"])
            raise OSError(err, f"{os.strerror(err)} making the sockets ({fields['step']}): {command}")
        if "data" in fields:
            report.exchange = Exchange(int(fields["data"]), int(fields["c2s"]), int(fields["s2c"]),
                                       fields["ulp"])
        elif "side" in fields:
            report.sides[fields["side"]] = Side(int(fields["status"]), int(fields["peerid"]))
        else:
            report.done, report.ok = int(fields["done"]), int(fields["ok"])
            report.cancelled = int(fields["cancelled"])
            report.first_status, report.usecs = int(fields["first_status"]), int(fields["usecs"])
    return report


# ---- handshake daemons -----------------------------------------------------------------

def _genl_subscribers(pid: int | str = "self") -> set[int]:
    """Socket inodes of generic netlink sockets subscribed to a multicast group, in the
    network namespace of `pid` (/proc/net is per namespace)."""
    inodes = set()
    try:
        with open(f"/proc/{pid}/net/netlink") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[1] == "16" and int(cols[3], 16) != 0:
                    inodes.add(int(cols[9]))
    except FileNotFoundError:  # the process is gone
        pass
    return inodes


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


class Daemon:
    """A handshake daemon (quichsd or tlshd) in a subprocess, ready once it has joined the
    `tlshd` multicast group."""

    def __init__(self, argv: list[str], workdir: Path, name: str, listeners: int = 1,
                 env: dict[str, str] | None = None, netns: str | None = None):
        """`listeners`: how many of its processes join the group (quichsd: each worker).
        `netns`: a network namespace made by `ip netns add` to run it in (its handshake
        requests are those of the sockets there; `ip netns exec` keeps the pid)."""
        self.name = name
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.log_path = workdir / f"{name}.log"
        self.log = open(self.log_path, "w+")  # noqa: SIM115 - open while the daemon runs; stop() closes it
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        deadline = time.monotonic() + 120
        while self.joined() < listeners:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{name} did not join the handshake group:\n{self.output()}")
            time.sleep(0.05)

    def joined(self) -> int:
        """How many of the daemon's processes hold a socket in a generic netlink group."""
        subscribers = _genl_subscribers(self.proc.pid)
        return sum(1 for pid in _process_tree(self.proc.pid) if _socket_inodes(pid) & subscribers)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def pids(self) -> list[int]:
        """The daemon process and its descendants (quichsd's workers)."""
        return _process_tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def quichsd_daemon(workdir: Path, config: str, workers: int = 1, netns: str | None = None) -> Daemon:
    path = workdir / "quichsd.conf"
    path.write_text(config + f"\n[quichsd]\nworkers = {workers}\ndbus = none\n")
    return Daemon([sys.executable, "-m", "quichsd", "daemon", "-c", str(path), "--foreground"],
                  workdir, "quichsd", listeners=workers, netns=netns)


def tlshd_daemon(workdir: Path, config: str, netns: str | None = None) -> Daemon:
    path = workdir / "tlshd.conf"
    path.write_text(config)
    return Daemon([str(tlshd_binary()), "-c", str(path), "-s"], workdir, "tlshd", netns=netns)


def open_fds(pids: list[int]) -> list[str]:
    """The open fds of `pids`, netlink sockets aside (a worker keeps one per request thread,
    and its thread pool may grow), as 'pid/fd -> target': what a leaked consumer socket or
    file would show up in."""
    with open("/proc/net/netlink") as f:
        next(f)
        netlink = {f"socket:[{line.split()[9]}]" for line in f}
    fds = []
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target not in netlink:
                    fds.append(f"{pid}/{fd} -> {target}")
        except FileNotFoundError:
            pass
    return sorted(fds)


# ---- keys -------------------------------------------------------------------------------

def add_psk_key(description: str, payload: bytes, keyring: str = "quichsd-test") -> int:
    """A "psk" key (the type nvme-keyring registers; tlshd's TCP server looks its PSKs up
    only with this type) in a named keyring linked to the user keyring."""
    modprobe("nvme-keyring")
    return add_user_key(description, payload, keyring, key_type="psk")


def add_user_key(description: str, payload: bytes, keyring: str = "quichsd-test",
                 key_type: str = "user") -> int:
    """A "user" key (a PSK: its description is the identity) in a named keyring linked to
    the user keyring, as lxin/quic's tests make them; configure `keyrings = <keyring>`."""
    from quichsd.daemon import keyring as kr
    ring = kr.find_keyring(keyring)
    if ring is None:
        ring = kr.add_key("keyring", keyring, None, kr.KEY_SPEC_USER_KEYRING)
        kr.setperm(ring, 0x3F1F1F1F)
    serial = kr.add_key(key_type, description, payload, ring)
    kr.setperm(serial, 0x3F1F1F1F)
    return serial
