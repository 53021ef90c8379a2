"""The daemon serving server-side handshakes: the cost of one served handshake against its
crypto floor.

The daemon is the real one (service.build_supervisor: supervisor, worker processes, privilege
drop, per-request threads, handle()); only the request source is the bench's. The kernel
would hand each worker accepted IPPROTO_QUIC sockets through ACCEPT; on this machine (no
IPPROTO_QUIC) each worker accepts simulated QUIC connections on its own loopback listener and
hands them to its Worker exactly as NetlinkSource hands ACCEPTed fds. Client processes (ours,
X25519, no server verification: the cheapest client we have) keep the workers busy.

    cost/floor the userspace CPU time of the thread that serves one request (handle() with
               everything it does: config, credentials, the TLS engine, logging, DONE, and
               the worker's own work for the request on that thread: its start or wake-up), the
               median over all requests served, against the bare cryptography calls a server
               makes in the same handshake (X25519 key pair and exchange, the key schedule,
               transcript hashes, Finished MACs, the ECDSA P-256 signature, sealing one
               ticket). "Userspace" as on a real kernel: the time spent inside the socket's
               calls (setsockopt, sendmsg, recvmsg ...; with the simulation, its Python
               stand-ins for syscalls, which also install packet keys) is measured apart and
               printed beside it (the metering's own cost, calibrated, is taken off), and the
               simulated kernel's own thread is not counted.

(Throughput with 2 workers against 1 is not measured: on a 2-core machine the clients share
the cores with the daemon and cap that ratio, whatever the daemon does.)

Ends with `daemon: cost/floor=R`.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import logging
import multiprocessing as mp
import os
import select
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, x25519  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from cryptography.hazmat.primitives.hmac import HMAC  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402

from quichsd import HandshakeConfig, HandshakeError, QuicSocket, abi, quic_handshake  # noqa: E402
from quichsd.daemon import config as cfgmod  # noqa: E402
from quichsd.daemon.keyring import AuthMode  # noqa: E402
from quichsd.daemon.request import DoneResult, HandshakeRequest, MessageType  # noqa: E402
from quichsd.daemon.service import build_supervisor  # noqa: E402
from quichsd.devcerts import leaf  # noqa: E402
from quichsd.sock import QuicSocketBackend  # noqa: E402
from quichsd.tls.client import ClientEngine  # noqa: E402
from quichsd.tls.config import Credentials, TlsConfig  # noqa: E402
from quichsd.tls.events import SendHandshake  # noqa: E402
from quichsd.tls.groups import EphemeralKeyPool  # noqa: E402
from quichsd.tls.server import ServerEngine  # noqa: E402

ALPN = b"bench"


# -- the daemon side ---------------------------------------------------------------------------

class MeteredSocket:
    """The socket backend, with the CPU time spent inside its calls added up (what would be
    system time in syscalls on a real kernel). metered(backend) makes one; the methods are
    built once per backend class, so per request the metering costs an object and, per
    call, two clock reads, whose share outside `inside` calibrate_metering() measures."""

    def __init__(self, backend) -> None:  # noqa: ANN001
        self._backend = backend
        self.inside = 0.0
        self.calls = 0

    def __getattr__(self, name: str):  # noqa: ANN204  (plain attributes: backend_name ...)
        return getattr(self._backend, name)


QuicSocketBackend.register(MeteredSocket)  # a backend by delegation


_METERED: dict[type, type] = {}


def _metered_method(name: str):  # noqa: ANN202
    clock = time.thread_time

    def method(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        start = clock()
        try:
            return getattr(self._backend, name)(*args, **kwargs)
        finally:
            self.inside += clock() - start
            self.calls += 1

    return method


class _MeteredBatch:
    """backend.batch()'s context manager with its entry and exit metered too: the
    simulation sends what the batch held when it ends (a real kernel sends inside each
    call), so that time is the socket's, as hold_output(False) was when it was a call."""

    def __init__(self, owner: MeteredSocket) -> None:
        self._owner = owner
        self._inner = owner._backend.batch()

    def __enter__(self) -> None:
        start = time.thread_time()
        try:
            self._inner.__enter__()
        finally:
            self._owner.inside += time.thread_time() - start

    def __exit__(self, *exc: object) -> None:
        start = time.thread_time()
        try:
            self._inner.__exit__(*exc)
        finally:
            self._owner.inside += time.thread_time() - start


def _metered_batch(self: MeteredSocket) -> _MeteredBatch:
    self.calls += 1
    return _MeteredBatch(self)


def metered(backend) -> MeteredSocket:  # noqa: ANN001
    cls = _METERED.get(type(backend))
    if cls is None:
        kind = type(backend)
        names = [n for n in dir(kind) if not n.startswith("__") and callable(getattr(kind, n))]
        methods = {n: _metered_method(n) for n in names}
        methods["batch"] = _metered_batch
        cls = _METERED[type(backend)] = type("Metered" + type(backend).__name__, (MeteredSocket,), methods)
    return cls(backend)


def calibrate_metering(n: int = 20000) -> float:
    """CPU seconds per metered call that land outside `inside` (the clock reads' share and
    the wrapper's call), against a direct call of the same no-op method; the bench takes
    calls x this off each request's figure."""
    class Noop:
        def noop(self) -> None:
            pass

    def run() -> float:
        plain, wrapped = Noop(), metered(Noop())
        start = time.thread_time()
        for _ in range(n):
            plain.noop()
        direct = time.thread_time() - start
        start = time.thread_time()
        for _ in range(n):
            wrapped.noop()
        return max(0.0, (time.thread_time() - start - wrapped.inside - direct) / n)

    run()
    return statistics.median(run() for _ in range(5))


class EngineMeter:
    """The server TLS engine's CPU time inside the daemon, per thread: ServerEngine's entry
    points (receive, choose, continue_flight) and the key pool's refill (the driver makes
    the next handshake's ephemeral key pair while it waits; the floor has that key pair)
    are wrapped in this bench process only, so a request's figure can be split into the
    engine's share and the daemon's own work, both measured in place (between served
    requests, with the caches as the daemon leaves them)."""

    def __init__(self) -> None:
        self.local = threading.local()
        for name in ("receive", "choose", "continue_flight"):
            setattr(ServerEngine, name, self._wrap(getattr(ServerEngine, name)))
        EphemeralKeyPool.refill = self._wrap(EphemeralKeyPool.refill)

    def _wrap(self, fn):  # noqa: ANN001, ANN202
        local = self.local
        clock = time.thread_time

        def method(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                local.spent = getattr(local, "spent", 0.0) + clock() - start

        return method

    def take(self) -> float:
        spent = getattr(self.local, "spent", 0.0)
        self.local.spent = 0.0
        return spent


class ListenerSource:
    """A worker's request source: connections accepted on its own simulated listener."""

    def __init__(self, report: socket.socket) -> None:
        self.report = report
        self.listener = QuicSocket(socket.AF_INET, backend="sim")
        self.listener.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, ALPN)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.conns: dict[int, QuicSocket] = {}
        self.thread_clock = threading.local()
        self.metering = calibrate_metering()
        self.engine = EngineMeter()
        self.floor = server_floor_setup()
        self._send({"port": self.listener.getsockname()[1]})

    def _send(self, message: dict) -> None:
        message["pid"] = os.getpid()
        self.report.send(json.dumps(message).encode())

    def next(self, timeout: float):  # noqa: ANN201
        self.listener.settimeout(timeout)
        start = time.thread_time()
        try:
            conn, _ = self.listener.accept()
        except TimeoutError:
            return None
        finally:
            # The simulated listener's accept stands in for the kernel's ACCEPT: its CPU
            # (taking in the client's Initial, making the connection) is socket time too,
            # charged to the request this thread serves next.
            self.thread_clock.accepting = getattr(self.thread_clock, "accepting", 0.0) + \
                time.thread_time() - start
        fd = os.open(os.devnull, os.O_RDONLY)  # the fd a Worker closes after DONE
        sock = metered(conn.backend)
        self.conns[fd] = conn, sock
        return fd, HandshakeRequest(sock, MessageType.SERVERHELLO, AuthMode.X509, timeout_ms=10000)

    def done(self, fd: int, result: DoneResult) -> None:
        # Runs on the thread that served the request, right after handle(). What serving this
        # request cost is that thread's CPU time since it began (a new thread), or since the
        # end of this call for its previous request (a thread the worker reuses): all the
        # worker's work between two DONEs, its own start and wake-up included, this
        # bookkeeping not.
        cpu = time.thread_time()
        since = getattr(self.thread_clock, "since", 0.0)
        conn, sock = self.conns.pop(fd)
        conn.close()
        accepting = getattr(self.thread_clock, "accepting", 0.0)
        self.thread_clock.accepting = 0.0
        cpu -= since + accepting + sock.inside + sock.calls * self.metering
        engine = self.engine.take()
        # The floor's calls once, here, in the cache state the daemon's work leaves behind
        # (a tight loop of them runs about 1.6x faster on this machine than the same calls
        # between served requests, and so does the engine: comparing a request's cost with a
        # floor measured in a loop charges that difference to the daemon).
        start = time.thread_time()
        self.floor()
        floor = time.thread_time() - start
        self._send({"cpu": cpu, "socket": sock.inside + accepting, "engine": engine, "floor": floor,
                    "status": result.status})
        self.thread_clock.since = time.thread_time()

    def close(self) -> None:
        self.listener.close()


def run_daemon(config_path: str, workers: int, report: socket.socket) -> None:
    # The daemon's default level, its records formatted as in service but written nowhere.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open until this process exits
    logging.basicConfig(level=logging.INFO, stream=devnull)
    config = cfgmod.load_file(config_path)
    supervisor = build_supervisor(lambda: ListenerSource(report), config, config_path, workers=workers)
    sys.exit(supervisor.run())


# -- the client side ---------------------------------------------------------------------------

def client_process(ports: list[int], threads: int, start_at: float, stop_at: float, out: mp.Queue) -> None:
    logging.disable(logging.WARNING)  # verify=False says so at every handshake
    config = HandshakeConfig(alpns=[ALPN.decode()], verify=False, timeout=10, groups=[0x001D])
    counts = [0] * threads
    failures = [0] * threads

    def run(index: int) -> None:
        n = index
        while time.time() < stop_at:
            port = ports[n % len(ports)]
            n += 1
            try:
                with QuicSocket(socket.AF_INET, backend="sim") as sock:
                    sock.connect(("127.0.0.1", port))
                    quic_handshake(sock, config)
                if time.time() >= start_at:
                    counts[index] += 1
            except (HandshakeError, OSError):
                failures[index] += 1

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((sum(counts), sum(failures)))


def process_cpu(pid: int) -> float:
    """utime + stime of a process, all threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase(config_path: str, workers: int, seconds: float, warmup: float, clients: int, threads: int) -> dict:
    report_rx, report_tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    daemon = mp.get_context("fork").Process(target=run_daemon, args=(config_path, workers, report_tx))
    daemon.start()
    report_tx.close()
    ports: list[int] = []
    pids: list[int] = []
    deadline = time.monotonic() + 30
    while len(ports) < workers:
        if not select.select([report_rx], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise RuntimeError("the daemon's workers did not report their listeners")
        message = json.loads(report_rx.recv(4096))
        if "port" in message:
            ports.append(message["port"])
            pids.append(message["pid"])
    start_at = time.time() + warmup
    stop_at = start_at + seconds
    out: mp.Queue = mp.get_context("fork").Queue()
    procs = [mp.get_context("fork").Process(target=client_process,
                                            args=(ports, threads, start_at, stop_at, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    cpu: list[float] = []
    sock: list[float] = []
    engine: list[float] = []
    floor: list[float] = []
    served_ok = 0
    daemon_cpu: list[float] = []
    while any(p.is_alive() for p in procs) or select.select([report_rx], [], [], 0)[0]:
        if len(daemon_cpu) < 2 and time.time() >= (start_at, stop_at)[len(daemon_cpu)]:
            daemon_cpu.append(sum(process_cpu(pid) for pid in pids))
        if select.select([report_rx], [], [], 0.05)[0]:
            message = json.loads(report_rx.recv(4096))
            if "cpu" in message and message["status"] == 0:
                cpu.append(message["cpu"])
                sock.append(message["socket"])
                engine.append(message["engine"])
                floor.append(message["floor"])
                served_ok += 1
    while len(daemon_cpu) < 2:  # the clients were done before the loop saw their stop time
        daemon_cpu.append(sum(process_cpu(pid) for pid in pids))
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join()
    os.kill(daemon.pid, signal.SIGTERM)
    daemon.join(20)
    report_rx.close()
    done = sum(r[0] for r in results)
    return {"rate": done / seconds, "failures": sum(r[1] for r in results), "cpu": cpu, "socket": sock,
            "engine": engine, "floor": floor,
            "served": served_ok, "daemon_cpu": (daemon_cpu[1] - daemon_cpu[0]) / max(done, 1)}


# -- the floor ---------------------------------------------------------------------------------

def server_floor_setup():
    """The bare cryptography/hashlib calls of one server-side handshake, nothing else."""
    cert, key = leaf("p256")
    sha256 = hashes.SHA256()
    zeros = bytes(32)
    early = HKDF.extract(sha256, b"", zeros)
    messages = [bytes(200), bytes(100), bytes(100), bytes(600), bytes(80), bytes(36), bytes(36)]
    client_pub = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    ticket_aead = AESGCM(bytes(32))

    def expand(secret: bytes, n: int = 32) -> bytes:
        return HKDFExpand(sha256, n, b"label" + bytes(32)).derive(secret)

    def handshake() -> None:
        priv = x25519.X25519PrivateKey.generate()
        priv.public_key().public_bytes_raw()
        shared = priv.exchange(x25519.X25519PublicKey.from_public_bytes(client_pub))
        h = hashlib.sha256()
        for m in messages:
            h.update(m)
            h.copy().digest()
        hs = HKDF.extract(sha256, expand(early), shared)
        c_hs, s_hs = expand(hs), expand(hs)
        key.sign(bytes(130), ec.ECDSA(hashes.SHA256()))
        master = HKDF.extract(sha256, expand(hs), zeros)
        expand(master), expand(master), expand(master)  # client/server application, resumption
        for base in (s_hs, c_hs):  # our Finished, and checking the client's
            mac = HMAC(expand(base), sha256)
            mac.update(zeros)
            mac.finalize()
        psk = expand(expand(master))  # the ticket's PSK from the resumption secret
        ticket_aead.encrypt(bytes(12), psk + bytes(40), None)

    return handshake


def floor_cost(n: int = 2000) -> float:
    fn = server_floor_setup()
    for _ in range(50):
        fn()
    best = []
    for _ in range(5):
        start = time.thread_time()
        for _ in range(n // 5):
            fn()
        best.append((time.thread_time() - start) / (n // 5))
    return statistics.median(best)


def engine_server_cost(n: int = 2000) -> float:
    """For reference: the server's TLS engine alone, in memory (no socket, no driver, no
    daemon), with the same certificate, group and one ticket: the CPU time of its receive()
    calls per handshake."""
    cert, key = leaf("p256")
    client_cfg = TlsConfig(alpn_protocols=[ALPN], verify_peer=False, transport_parameters=bytes(64),
                           groups=[0x001D])
    server_cfg = TlsConfig(alpn_protocols=[ALPN], credentials=Credentials([cert], key),
                           transport_parameters=bytes(64), session_ticket_key=bytes(64))

    def handshake() -> float:
        client, server = ClientEngine(client_cfg), ServerEngine(server_cfg)
        spent = 0.0
        queue = [(server, e) for e in client.start(time.time())]
        while queue:
            target, event = queue.pop()
            if type(event) is not SendHandshake:
                continue
            start = time.thread_time()
            events = target.receive(event.level, event.data, time.time())
            if target is server:
                spent += time.thread_time() - start
            queue.extend((client if target is server else server, e) for e in reversed(events))
        return spent

    for _ in range(50):
        handshake()
    return statistics.median(sum(handshake() for _ in range(n // 5)) / (n // 5) for _ in range(5))


# -- main --------------------------------------------------------------------------------------

def write_config(directory: Path) -> str:
    cert, key = leaf("p256")
    (directory / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    path = directory / "config"
    path.write_text(f"[authenticate.server]\nx509.certificate = {directory / 'cert.pem'}\n"
                    f"x509.private_key = {directory / 'key.pem'}\n\n[quichsd]\ndbus = none\n")
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=2, help="phases, each with a fresh daemon")
    parser.add_argument("--workers", type=int, default=1, help="daemon worker processes")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="handshakes in flight per client process")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}; {args.workers} worker(s); clients: {args.clients} processes x "
          f"{args.threads} threads, same machine")
    daemon_cpu: list[float] = []
    cpu: list[float] = []
    sock: list[float] = []
    engine_in_place: list[float] = []
    floor_in_place: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config_path = write_config(Path(tmp))
        for _ in range(args.rounds):
            r = phase(config_path, args.workers, args.seconds, args.warmup, args.clients, args.threads)
            cpu.extend(r["cpu"])
            sock.extend(r["socket"])
            engine_in_place.extend(r["engine"])
            floor_in_place.extend(r["floor"])
            daemon_cpu.append(r["daemon_cpu"])
            print(f"{r['rate']:7.1f} handshakes/s served ({r['failures']} client failures)")
            if r["failures"] and r["rate"] == 0:
                raise SystemExit(f"no handshake succeeded ({errno.errorcode.get(r['failures'], '')})")
    loop_floor = floor_cost()
    loop_engine = engine_server_cost()
    cost = statistics.median(cpu)
    floor = statistics.median(floor_in_place)
    engine = statistics.median(engine_in_place)
    own = statistics.median(c - e for c, e in zip(cpu, engine_in_place, strict=True))
    print(f"per served request (median of {len(cpu)}): userspace CPU {cost * 1e3:.3f} ms, "
          f"inside socket calls {statistics.median(sock) * 1e3:.3f} ms "
          f"(the simulation's stand-ins for syscalls)")
    print(f"  of which the server TLS engine {engine * 1e3:.3f} ms, the daemon's own work around it "
          f"(driver, request, config, logging, DONE, its thread) {own * 1e3:.3f} ms")
    print(f"server crypto floor, run once after each served request: {floor * 1e3:.3f} ms "
          f"(engine/floor {engine / floor:.2f})")
    print(f"the same in a tight loop (warm caches): floor {loop_floor * 1e3:.3f} ms, the engine alone "
          f"in memory {loop_engine * 1e3:.3f} ms (engine/floor {loop_engine / loop_floor:.2f}); "
          f"the request's cost against that floor: {cost / loop_floor:.2f}")
    print(f"CPU per handshake of the whole daemon (all its threads, the simulated kernel's included): "
          f"{statistics.median(daemon_cpu) * 1e3:.2f} ms")
    print(f"daemon: cost/floor={cost / floor:.2f}")


if __name__ == "__main__":
    main()
