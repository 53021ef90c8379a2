"""Soak: handshakes and small transfers, for minutes, through the simulation's `quichsd
server` and through the daemon, watching what the serving processes hold.

Two loads run side by side for --minutes (SOAK_MINUTES in `make soak`; default 30):

- simulation: `quichsd server --backend sim` in a subprocess; a client thread of ours
  (QuicSocket, simulation backend, certificate verified) does a full handshake, sends a
  small message on a new stream and reads its echo, closes, and again.
- daemon: the assembled daemon (build_supervisor: supervisor, worker processes, privilege
  drop, handle()) in a subprocess with its request source injected, as tests/daemon runs
  it (tests/daemon/worker_harness.py: each request a simulated QUIC socket handed over an
  AF_UNIX socket instead of the kernel's netlink ACCEPT); a driver thread of ours sends one
  client request at a time (the daemon handshakes as a client against a second `quichsd
  server`) and waits for its DONE.

Every --interval seconds (and at start and end) it prints, per serving process tree (the
sim server; the daemon's supervisor and workers, summed), RSS, open fds and threads from
/proc, and each load's handshake rate since the last line.

Fails (exit 1), saying why, if: any handshake, echo or DONE fails; the RSS of a process
tree, median over the last quarter of the samples (those after a warm-up of 30 s, at most
a tenth of the run), exceeds the median over the first
quarter by more than max(10%, 4 MiB) (the allocator's warm-up stays in the first quarter);
the fds or threads of a process tree, minimum over the last quarter, exceed the maximum
over the first quarter by more than COUNT_SLACK (2: both vary with the requests in flight
and a pool may settle a thread higher; a leak lifts the floor and keeps lifting it: one fd
or thread per 10,000 handshakes is dozens over a 2-minute run).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from quichsd import HandshakeConfig, QuicSocket, quic_handshake  # noqa: E402
from quichsd.devcerts import write_pki  # noqa: E402
from tests.sockets import exchange, free_port  # noqa: E402

ALPN = "h3"  # the daemon harness sets h3 on its client sockets
MESSAGE = b"soak " * 40  # 200 bytes each way per sim connection
TIMEOUT = 10.0
RSS_MARGIN_FRACTION = 0.10
RSS_MARGIN_KIB = 4096
COUNT_SLACK = 2  # fds or threads a process tree may settle higher by, once
WARMUP = 30.0  # seconds (at most a tenth of the run) left out of the quarters compared


# -- what a process tree holds -------------------------------------------------------------

def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def tree_usage(pid: int) -> dict[str, int]:
    """RSS (KiB), fds and threads of `pid` and its descendants."""
    total = {"rss_kib": 0, "fds": 0, "threads": 0, "procs": 0}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total["rss_kib"] += int(line.split()[1])
                    elif line.startswith("Threads:"):
                        total["threads"] += int(line.split()[1])
            total["fds"] += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            continue  # it ended meanwhile
        total["procs"] += 1
        todo.extend(children(p))
    return total


# -- the loads ------------------------------------------------------------------------------

@dataclass
class Load:
    name: str
    done: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def failed(self, what: str) -> None:
        self.failures.append(what)
        print(f"soak: {self.name}: {what}", flush=True)


def start_server(pki: tuple[str, str, str], port: int, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "quichsd", "server", "--backend", "sim", "--listen", f"127.0.0.1:{port}",
            "--alpn", ALPN, "--cert", pki[1], "--key", pki[2]]
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 20
    while "listening" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"soak: `quichsd server` did not start: {log.read_text()[-500:]}")
        time.sleep(0.05)
    return proc


def sim_client(load: Load, port: int, ca: str, pause: float) -> None:
    config = HandshakeConfig(alpns=[ALPN], hostname="localhost", cafile=ca, timeout=TIMEOUT)
    while not load.stop.is_set():
        try:
            with QuicSocket(socket.AF_INET, backend="sim") as sock:
                sock.connect(("127.0.0.1", port))
                quic_handshake(sock, config)
                echo = exchange(sock, MESSAGE, timeout=TIMEOUT)
            if echo != MESSAGE:
                load.failed(f"echo of {len(MESSAGE)} bytes came back as {len(echo)} different bytes")
            else:
                load.done += 1
        except Exception as exc:  # a failure is a result of the soak, reported at the end
            load.failed(f"{type(exc).__name__}: {exc}")
        load.stop.wait(pause)


class DaemonProc:
    """tests/daemon's harness daemon (the real supervisor and workers) in a subprocess."""

    def __init__(self, directory: Path, ca: str, workers: int) -> None:
        config = directory / "daemon.conf"
        config.write_text(f"[authenticate.client]\nx509.truststore = {ca}\n\n"
                          f"[quichsd]\ndefault_timeout = {TIMEOUT}\ndbus = none\n")
        config.chmod(0o644)
        self.req, req_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.out, out_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.log = open(directory / "daemon.log", "w+")  # noqa: SIM115 - the daemon's stderr, read by tail()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.daemon.worker_harness", str(req_child.fileno()),
             str(out_child.fileno()),
             str(config), str(workers)],
            pass_fds=(req_child.fileno(), out_child.fileno()), cwd=ROOT, stderr=self.log)
        req_child.close()
        out_child.close()
        self.next_id = 0
        self.wait_up(workers)

    def event(self, timeout: float) -> dict | None:
        if not select.select([self.out], [], [], timeout)[0]:
            return None
        return json.loads(self.out.recv(65536))

    def wait_up(self, workers: int) -> None:
        up: set[int] = set()
        deadline = time.monotonic() + 30
        while len(up) < workers:
            ev = self.event(max(0.0, deadline - time.monotonic()))
            if ev is None:
                raise SystemExit(f"soak: the daemon's workers did not come up: {self.tail()}")
            if ev["event"] == "up":
                up.add(ev["pid"])

    def request(self, address: tuple[str, int]) -> int | None:
        """One client request; its DONE status, None if none came in time."""
        self.next_id += 1
        rid = self.next_id
        mine, theirs = socket.socketpair()
        msg = {"id": rid, "address": list(address), "timeout_ms": int(TIMEOUT * 1000)}
        socket.send_fds(self.req, [json.dumps(msg).encode()], [theirs.fileno()])
        theirs.close()
        try:
            deadline = time.monotonic() + TIMEOUT + 5
            while (remaining := deadline - time.monotonic()) > 0:
                ev = self.event(remaining)
                if ev is not None and ev["event"] == "done" and ev["id"] == rid:
                    return int(ev["status"])
            return None
        finally:
            mine.close()

    def tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-800:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def daemon_driver(load: Load, daemon: DaemonProc, port: int, pause: float) -> None:
    while not load.stop.is_set():
        status = daemon.request(("127.0.0.1", port))
        if status == 0:
            load.done += 1
        else:
            load.failed("no DONE in time" if status is None else f"DONE with status {status}")
        load.stop.wait(pause)


# -- the verdict ------------------------------------------------------------------------------

def quarters(samples: list[dict], warmup: float) -> tuple[list[dict], list[dict]]:
    """First and last quarter of the samples taken after `warmup` seconds (threads and
    buffers that start on demand start then)."""
    steady = [s for s in samples if s["t"] >= warmup] or samples
    q = max(1, len(steady) // 4)
    return steady[:q], steady[-q:]


def verdict(name: str, samples: list[dict], warmup: float) -> list[str]:
    first, last = quarters(samples, warmup)
    problems = []
    rss0 = statistics.median(s["rss_kib"] for s in first)
    rss1 = statistics.median(s["rss_kib"] for s in last)
    margin = max(RSS_MARGIN_KIB, rss0 * RSS_MARGIN_FRACTION)
    print(f"soak: {name}: RSS median first quarter {rss0 / 1024:.1f} MiB, last quarter {rss1 / 1024:.1f} MiB "
          f"(margin {margin / 1024:.1f} MiB)")
    if rss1 - rss0 > margin:
        problems.append(f"{name}: RSS grew {(rss1 - rss0) / 1024:.1f} MiB (margin {margin / 1024:.1f} MiB)")
    for what in ("fds", "threads"):
        # In-flight requests make both vary from sample to sample, and a thread pool may
        # settle one or two threads higher once (the daemon's idle request threads linger
        # until their idle timeout); a leak shows as a last quarter whose lowest value is
        # above anything the first quarter held by more than that.
        a, b = max(s[what] for s in first), min(s[what] for s in last)
        print(f"soak: {name}: {what} at most {a} in the first quarter, at least {b} in the last")
        if b > a + COUNT_SLACK:
            problems.append(f"{name}: {what} grew: at most {a} in the first quarter, "
                            f"at least {b} in the last (slack {COUNT_SLACK})")
    return problems


def line(elapsed: float, usage: dict[str, dict], loads: list[Load], counts: dict[str, int], dt: float) -> str:
    parts = [f"t={elapsed / 60:5.1f} min"]
    for load in loads:
        rate = (load.done - counts.get(load.name, 0)) / dt if dt > 0 else 0.0
        u = usage[load.name]
        parts.append(f"{load.name}: {rate:5.1f} hs/s rss {u['rss_kib'] / 1024:6.1f} MiB fds {u['fds']:3d} "
                     f"threads {u['threads']:3d}")
    return "soak: " + " | ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 30)))
    parser.add_argument("--interval", type=float, default=None,
                        help="seconds between report lines (default: 3 minutes, or 1/8 of a short run)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples of the processes")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between one client's connections")
    parser.add_argument("--workers", type=int, default=2, help="daemon worker processes")
    args = parser.parse_args()
    duration = args.minutes * 60
    interval = args.interval or min(180.0, max(args.sample, duration / 8))
    sample_every = min(args.sample, interval)
    warmup = min(WARMUP, duration / 10)

    directory = Path(tempfile.mkdtemp(prefix="quichsd-soak-"))
    directory.chmod(0o755)
    pki = write_pki(directory)
    for path in pki:
        Path(path).chmod(0o644)  # the daemon's workers read them after dropping privileges
    sim_port, peer_port = free_port(), free_port()
    sim_server = start_server(pki, sim_port, directory / "sim-server.log")
    peer_server = start_server(pki, peer_port, directory / "daemon-peer.log")
    daemon = DaemonProc(directory, pki[0], args.workers)
    sim, dmn = Load("sim"), Load("daemon")
    loads = [sim, dmn]
    pids = {"sim": sim_server.pid, "daemon": daemon.proc.pid}
    threads = [threading.Thread(target=sim_client, args=(sim, sim_port, pki[0], args.pause), daemon=True),
               threading.Thread(target=daemon_driver, args=(dmn, daemon, peer_port, args.pause), daemon=True)]
    samples: dict[str, list[dict]] = {name: [] for name in pids}
    print(f"soak: {args.minutes:g} min; sim server pid {sim_server.pid}, daemon pid {daemon.proc.pid} "
          f"({args.workers} workers), files in {directory}", flush=True)
    start = time.monotonic()
    for t in threads:
        t.start()
    counts: dict[str, int] = {}
    last_line = start
    try:
        while True:
            now = time.monotonic()
            usage = {name: tree_usage(pid) for name, pid in pids.items()}
            for name in pids:
                samples[name].append({**usage[name], "t": now - start})
            if now - last_line >= interval or not samples["sim"][:-1] or now - start >= duration:
                print(line(now - start, usage, loads, counts, now - last_line), flush=True)
                counts = {load.name: load.done for load in loads}
                last_line = now
            if now - start >= duration:
                break
            if any(p.poll() is not None for p in (sim_server, peer_server, daemon.proc)):
                print("soak: a serving process ended", flush=True)
                sim.failures.append("a serving process ended")
                break
            time.sleep(min(sample_every, max(0.0, start + duration - now)))
    finally:
        for load in loads:
            load.stop.set()
        for t in threads:
            t.join(TIMEOUT + 10)
        daemon.stop()
        for proc in (sim_server, peer_server):
            proc.terminate()
            proc.wait(10)

    elapsed = time.monotonic() - start
    problems = [f"{load.name}: {len(load.failures)} failed (first: {load.failures[0]})"
                for load in loads if load.failures]
    for name in pids:
        problems += verdict(name, samples[name], warmup)
    for load, log in ((sim, "sim-server.log"), (dmn, "daemon-peer.log")):
        served = (directory / log).read_text().count(" succeeded")
        print(f"soak: {load.name}: {load.done} handshakes in {elapsed / 60:.1f} min "
              f"({load.done / elapsed:.1f}/s), {len(load.failures)} failed; "
              f"the server logged {served} successful")
    for problem in problems:
        print(f"soak: FAIL {problem}")
    if not problems:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"soak: {'FAIL (files kept in ' + str(directory) + ')' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
