"""A half-open flood against `quichsd server` (simulation backend), with a legitimate client
measuring its handshake latency meanwhile.

Two runs, each with a fresh server: "protected" (the server as configured: its automatic
Retry above a number of half-open connections, its caps and bounded handshake pool are
what protect it; add --server-arg=--retry for a server that always sends Retry), and
"memory" (the simulation's admission limits lifted and the listener's backlog raised to
hold every Initial, so that the per-connection figure is taken over thousands of held
connections; the legitimate client is expected to suffer there, its figure is printed but
not used).

The server runs in a subprocess on its own port, as `quichsd server` (quichsd.cli.main),
with one extra thread of ours that reads, every STATS_INTERVAL seconds, the process's
VmRSS and thread count (/proc/self/status) and how many connections the simulation's
endpoints hold and how many of them are still ESTABLISHING (half-open), and prints them as
one JSON line on stderr (the thread is counted in `threads`; it allocates nothing that
stays).

The flood: --count (5,000) client Initials at --rate (1,000/s), from raw UDP sockets bound
to --sources different loopback addresses (127.0.1.x, so a per-source cap alone cannot
explain the result), never followed up. Each is a real ClientHello (our TLS client engine,
a fresh X25519 share, the server's ALPN, transport parameters with its SCID) in a correctly
protected Initial (our packet protection, RFC 9001 §5) with random 8-byte DCID and SCID,
padded to 1200 bytes. All of them are built before the flood starts.

The legitimate client: quichsd's own client (QuicSocket, simulation backend, from
127.0.0.1, certificate verified) does one full handshake every --legit-interval seconds
from before the flood until --settle seconds after its last Initial, each with a 10 s
deadline; a failed handshake counts as 10,000 ms in the percentiles and is reported.

Figures printed per run: RSS and threads at start (listening, warmed by one handshake),
peak and end (--settle seconds after the flood), the most half-open connections held, and
the last line `flood: legit_p99_ms=X halfopen_kib=Y`:

- legit_p99_ms (protected run): the 99th percentile of the legitimate handshakes'
  latencies (connect to handshake complete) that overlapped the flood (first Initial to
  last Initial + --tail).
- halfopen_kib (memory run): the server's RSS growth over the start figure, divided by the
  number of half-open connections it held at that same moment (one stats sample: both read
  in one step of the stats thread), taken at the sample with the most half-open
  connections. It includes everything the server holds for them: the simulation's
  connection state and its endpoint's maps, the TLS engines and touched thread stacks of
  those in a handshake on the pool, cipher contexts, allocator overhead and freed memory
  the allocator did not return. With fewer than --min-halfopen held the ratio would say
  little and is printed as nan.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from quichsd import HandshakeConfig, QuicSocket, quic_handshake  # noqa: E402
from quichsd.devcerts import write_pki  # noqa: E402
from quichsd.quic.packet_protection import initial_keys  # noqa: E402
from quichsd.quic.transport_params import TransportParameters  # noqa: E402
from quichsd.quic.versions import QUIC_V1, LongPacketType  # noqa: E402
from quichsd.sock.sim.frames import encode_crypto  # noqa: E402
from quichsd.sock.sim.packets import build_long_packet  # noqa: E402
from quichsd.sock.sim.state import ConnState  # noqa: E402
from quichsd.tls.client import ClientEngine  # noqa: E402
from quichsd.tls.config import TlsConfig  # noqa: E402
from tests.sockets import free_port  # noqa: E402

ALPN = "flood"
DATAGRAM = 1200
STATS_INTERVAL = 0.05
LEGIT_TIMEOUT = 10.0


# -- the server process --------------------------------------------------------------------

def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS (KiB) and Threads of a process, from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    return out


def sim_connection_counts() -> tuple[int, int]:
    """(connections, of which ESTABLISHING) over the process's simulation endpoints. Reads
    the endpoint's registrations under its lock; nothing is changed."""
    from quichsd.sock.sim import endpoint as sim_endpoint

    total = half = 0
    for ep in list(sim_endpoint._registry.values()):
        with ep.lock:
            conns = list(ep._live)
        total += len(conns)
        half += sum(1 for c in conns if c.state == ConnState.ESTABLISHING)
    return total, half


def stats_loop() -> None:
    while True:
        status = proc_status()
        conns, half = sim_connection_counts()
        status.update(t=time.time(), conns=conns, halfopen=half)
        print(json.dumps(status), file=sys.stderr, flush=True)
        time.sleep(STATS_INTERVAL)


def raise_admission_caps() -> None:
    """For the halfopen_kib measurement: the simulation's admission limits (automatic Retry,
    half-open caps) so high that every Initial makes a connection."""
    from quichsd.sock.sim import endpoint as sim_endpoint

    limits = getattr(sim_endpoint, "ADMISSION_LIMITS", None)
    if limits is None:
        return  # a tree without admission limits: nothing to raise
    sim_endpoint.ADMISSION_LIMITS = type(limits)(**{name: 1 << 30 for name in limits.__dataclass_fields__})


def child_server(argv: list[str]) -> int:
    from quichsd.cli import main

    if os.environ.get("FLOOD_RAISE_CAPS") == "1":
        raise_admission_caps()
    threading.Thread(target=stats_loop, daemon=True, name="flood-stats").start()
    return main(argv)


class Server:
    """`quichsd server` in a subprocess, its stats lines collected by a reader thread."""

    def __init__(self, pki: tuple[str, str, str], port: int, extra: list[str], out_path: Path,
                 raise_caps: bool) -> None:
        argv = [sys.executable, __file__, "--child", "server", "--backend", "sim",
                "--listen", f"127.0.0.1:{port}", "--alpn", ALPN, "--cert", pki[1], "--key", pki[2], *extra]
        self.out = open(out_path, "w+")  # noqa: SIM115 - the server's stdout until stop() closes it
        env = {**os.environ, "FLOOD_RAISE_CAPS": "1" if raise_caps else "0"}
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.PIPE, text=True, env=env)
        self.samples: list[dict] = []
        self.other_stderr: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                sample = json.loads(line)
            except ValueError:
                self.other_stderr.append(line.rstrip())
                continue
            with self.lock:
                self.samples.append(sample)

    def wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.out.seek(0)
            if "listening" in self.out.read():
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited ({self.proc.returncode}): {self.other_stderr[-5:]}")
            time.sleep(0.05)
        raise SystemExit("the server did not start listening")

    def latest(self) -> dict:
        with self.lock:
            return dict(self.samples[-1]) if self.samples else {}

    def since(self, t0: float) -> list[dict]:
        with self.lock:
            return [s for s in self.samples if s["t"] >= t0]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


# -- the flood -----------------------------------------------------------------------------

def client_initial(rng: random.Random) -> bytes:
    """One valid-looking client Initial: a real ClientHello, random CIDs, 1200 bytes."""
    dcid, scid = rng.randbytes(8), rng.randbytes(8)
    tp = TransportParameters(initial_source_connection_id=scid, max_idle_timeout=30_000,
                             initial_max_data=1 << 20, initial_max_stream_data_bidi_local=1 << 18,
                             initial_max_stream_data_bidi_remote=1 << 18, initial_max_streams_bidi=16,
                             active_connection_id_limit=4).encode()
    (hello,) = ClientEngine(TlsConfig(alpn_protocols=[ALPN.encode()], server_name="localhost",
                                      verify_peer=False, transport_parameters=tp)).start()
    client_key = initial_keys(dcid, QUIC_V1)[0]
    crypto = encode_crypto(0, hello.data)

    def build(padding: int) -> bytes:
        return build_long_packet(client_key, QUIC_V1, LongPacketType.INITIAL, dcid, scid, b"", 0, None,
                                 crypto + bytes(padding))

    return build(DATAGRAM - len(build(0)))


def flood_sockets(sources: int) -> list[socket.socket]:
    socks = []
    for i in range(sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.1.{1 + i % 250}", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answers are not read
        socks.append(s)
    return socks


def run_flood(packets: list[bytes], socks: list[socket.socket], port: int,
              rate: float) -> tuple[float, float]:
    """Send `packets` at `rate` per second (in 5 ms batches); returns (first, last) send times."""
    start = time.monotonic()
    sent = 0
    while sent < len(packets):
        due = min(len(packets), int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            with contextlib.suppress(OSError):  # a full socket buffer: that Initial is lost, as on a network
                socks[sent % len(socks)].sendto(packets[sent], ("127.0.0.1", port))
            sent += 1
        time.sleep(0.005)
    return start, time.monotonic()


# -- the legitimate client -----------------------------------------------------------------

class Legit:
    def __init__(self, port: int, pki: tuple[str, str, str], interval: float) -> None:
        self.port, self.interval = port, interval
        self.config = HandshakeConfig(alpns=[ALPN], hostname="localhost", cafile=pki[0],
                                      timeout=LEGIT_TIMEOUT)
        self.results: list[tuple[float, float, str | None]] = []  # (start, ms, error)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def one(self) -> tuple[float, float, str | None]:
        t0 = time.monotonic()
        error = None
        try:
            with QuicSocket(socket.AF_INET, backend="sim") as sock:
                sock.connect(("127.0.0.1", self.port))
                quic_handshake(sock, self.config)
        except Exception as exc:  # a failed handshake is a result here, not a crash
            error = f"{type(exc).__name__}: {exc}"
        ms = (time.monotonic() - t0) * 1000.0
        return t0, (LEGIT_TIMEOUT * 1000.0 if error else ms), error

    def _run(self) -> None:
        while not self.stop.is_set():
            self.results.append(self.one())
            self.stop.wait(self.interval)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


@dataclass
class RunResult:
    p99: float
    kib: float


def one_run(args: argparse.Namespace, packets: list[bytes], pki: tuple[str, str, str], tmp: Path,
            server_args: list[str], raise_caps: bool, label: str) -> RunResult:
    """One server, one flood, the legitimate client throughout; prints its figures."""
    socks = flood_sockets(args.sources)
    port = free_port()
    server = Server(pki, port, server_args, tmp / f"server-{label}.out", raise_caps)
    try:
        server.wait_listening()
        legit = Legit(port, pki, args.legit_interval)
        warm = legit.one()
        if warm[2]:
            raise SystemExit(f"the warm-up handshake failed: {warm[2]}")
        time.sleep(3 * STATS_INTERVAL)
        start = server.latest()
        legit.thread.start()
        t_wall0 = time.time()
        first, last = run_flood(packets, socks, port, args.rate)
        time.sleep(args.settle)
        legit.stop.set()
        legit.thread.join(LEGIT_TIMEOUT + 5)
        # Every handshake that overlapped the flood (a slow one started just before counts).
        window = [r for r in legit.results if r[0] <= last + args.tail and r[0] + r[1] / 1000.0 >= first]
        end = server.latest()
        samples = server.since(t_wall0)
    finally:
        server.stop()
        for s in socks:
            s.close()

    failed = [r for r in window if r[2]]
    latencies = [r[1] for r in window]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    peak_rss = max(samples, key=lambda s: s["rss_kib"])
    peak_threads = max(s["threads"] for s in samples)
    peak_half = max(samples, key=lambda s: (s["halfopen"], s["rss_kib"]))
    held = peak_half["halfopen"]
    growth = peak_half["rss_kib"] - start["rss_kib"]
    kib = growth / held if held >= args.min_halfopen else math.nan

    print(f"-- {label}: {args.count} Initials at {args.rate:g}/s from {args.sources} sources, sent in "
          f"{last - first:.2f} s; server args: {' '.join(server_args) or '(none)'}"
          f"{'; admission caps raised' if raise_caps else ''}")
    print(f"server RSS  start {start['rss_kib'] / 1024:7.1f} MiB  peak {peak_rss['rss_kib'] / 1024:7.1f} MiB"
          f"  end {end['rss_kib'] / 1024:7.1f} MiB")
    print(f"threads     start {start['threads']:7d}      peak {peak_threads:7d}      end {end['threads']:7d}")
    print(f"connections held at peak: {held} half-open (of {peak_half['conns']}), "
          f"RSS then +{growth / 1024:.1f} MiB over start ({kib:.1f} KiB each); "
          f"at end: {end['halfopen']} half-open of {end['conns']}")
    print(f"legit: {len(window)} handshakes during the flood, p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
          f"max {max(latencies, default=math.nan):.0f} ms, {len(failed)} failed"
          + (f" (first: {failed[0][2]})" if failed else ""))
    if args.verbose:
        for t0, ms, err in legit.results:
            print(f"  legit at {t0 - first:+7.2f} s: {ms:6.0f} ms {err or ''}")
    return RunResult(p99, kib)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_server(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000, help="half-open Initials to send")
    parser.add_argument("--rate", type=float, default=1000.0, help="Initials per second")
    parser.add_argument("--sources", type=int, default=64, help="loopback source addresses of the flood")
    parser.add_argument("--legit-interval", type=float, default=0.05,
                        help="seconds between legitimate handshakes")
    parser.add_argument("--tail", type=float, default=1.0, help="legit handshakes counted after the flood")
    parser.add_argument("--settle", type=float, default=12.0,
                        help="seconds after the flood before the end figure")
    parser.add_argument("--min-halfopen", type=int, default=1000,
                        help="fewer half-open connections held at peak: no halfopen_kib ratio (nan)")
    parser.add_argument("--only", choices=("protected", "memory"),
                        help="one of the two runs (default: both)")
    parser.add_argument("--verbose", action="store_true", help="list every legitimate handshake")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra argument for `quichsd server` in both runs (repeat), "
                             "e.g. --server-arg=--retry")
    args = parser.parse_args()

    rng = random.Random(0x51ED)
    t_build = time.monotonic()
    packets = [client_initial(rng) for _ in range(args.count)]
    assert all(len(p) == DATAGRAM for p in packets)
    print(f"built {len(packets)} Initials of {DATAGRAM} bytes in {time.monotonic() - t_build:.1f} s")
    protected = memory = RunResult(math.nan, math.nan)
    with tempfile.TemporaryDirectory() as tmp:
        pki = write_pki(Path(tmp))
        if args.only != "memory":
            protected = one_run(args, packets, pki, Path(tmp), args.server_arg, False, "protected")
        if args.only != "protected":
            backlog = [f"--backlog={args.count + 100}"] if server_has_option("--backlog") else []
            memory = one_run(args, packets, pki, Path(tmp), [*args.server_arg, *backlog], True, "memory")
    if args.only != "protected" and math.isnan(memory.kib):
        print(f"halfopen_kib: fewer than {args.min_halfopen} half-open connections held in the memory run: "
              f"no meaningful per-connection figure")
    print(f"flood: legit_p99_ms={protected.p99:.0f} halfopen_kib={memory.kib:.1f}")


def server_has_option(option: str) -> bool:
    from quichsd.cli import build_parser

    server = build_parser()._subparsers._group_actions[0].choices["server"]  # type: ignore[union-attr]
    return any(option in action.option_strings for action in server._actions)


if __name__ == "__main__":
    main()
