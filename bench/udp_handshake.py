"""Full QUIC handshakes per second over loopback UDP: quichsd (auto backend: the
simulation where the kernel has no IPPROTO_QUIC) against aioquic's asyncio client and
server, each with client and server in one process and in two, in one run.

Same certificate (ECDSA P-256), same group (X25519), verification on, one handshake at a
time, in interleaved rounds (medians reported), each measurement in fresh processes. Ends
with `udp_handshake: quichsd/aioquic=R`, R taken from the two-process runs.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake  # noqa: E402
from quichsd.devcerts import write_pki  # noqa: E402

ALPN = "bench"


def announce(port: int, port_out: mp.Queue | None, ready: threading.Event | None,
             port_box: list[int] | None) -> None:
    """Tell the harness where a server listens: across processes (queue) or threads."""
    if port_out is not None:
        port_out.put(port)
    if port_box is not None:
        port_box.append(port)
    if ready is not None:
        ready.set()


# -- quichsd ------------------------------------------------------------------------------

def quichsd_server(pki: tuple[str, str, str], port_out: mp.Queue | None, ready: threading.Event | None,
                   port_box: list[int] | None) -> None:
    listener = QuicSocket(socket.AF_INET)
    listener.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, ALPN.encode())
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    announce(listener.getsockname()[1], port_out, ready, port_box)
    config = HandshakeConfig(server=True, alpns=[ALPN], cert_file=pki[1], key_file=pki[2],
                             session_tickets=False, timeout=10)
    while True:
        conn, _ = listener.accept()
        with conn:
            quic_handshake(conn, config)


def quichsd_clients(port: int, pki: tuple[str, str, str], seconds: float) -> float:
    config = HandshakeConfig(alpns=[ALPN], hostname="localhost", cafile=pki[0], timeout=10)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        with QuicSocket(socket.AF_INET) as sock:
            sock.connect(("127.0.0.1", port))
            quic_handshake(sock, config)
        count += 1
    return count / (time.perf_counter() - start)


# -- aioquic ------------------------------------------------------------------------------

def aioquic_server(pki: tuple[str, str, str], port_out: mp.Queue | None, ready: threading.Event | None,
                   port_box: list[int] | None) -> None:
    from aioquic.asyncio import serve
    from aioquic.quic.configuration import QuicConfiguration

    async def main() -> None:
        cfg = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
        cfg.load_cert_chain(pki[1], pki[2])
        server = await serve("127.0.0.1", 0, configuration=cfg)
        announce(server._transport.get_extra_info("sockname")[1], port_out, ready, port_box)
        await asyncio.Event().wait()

    asyncio.run(main())


def aioquic_clients(port: int, pki: tuple[str, str, str], seconds: float) -> float:
    from aioquic.asyncio import QuicConnectionProtocol
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    async def main() -> float:
        loop = asyncio.get_running_loop()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            cfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name="localhost",
                                    verify_mode=ssl.CERT_REQUIRED)
            cfg.load_verify_locations(pki[0])
            # As ours: handshake, send the close, do not wait out the draining period
            # (aioquic's connect() context manager would wait for it on exit).
            transport, protocol = await loop.create_datagram_endpoint(
                lambda cfg=cfg: QuicConnectionProtocol(QuicConnection(configuration=cfg)),
                local_addr=("127.0.0.1", 0))
            protocol.connect(("127.0.0.1", port))
            await protocol.wait_connected()
            protocol.close()
            transport.close()
            count += 1
        return count / (time.perf_counter() - start)

    return asyncio.run(main())


# -- harness ------------------------------------------------------------------------------

WARMUP = 0.3  # seconds of handshakes before each measurement, in its fresh processes


def one_process(server, clients, pki, seconds: float) -> float:
    ready, box = threading.Event(), []
    threading.Thread(target=server, args=(pki, None, ready, box), daemon=True).start()
    ready.wait(10)
    clients(box[0], pki, WARMUP)
    return clients(box[0], pki, seconds)


def two_processes(server, clients, pki, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    ports: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=server, args=(pki, ports, None, None), daemon=True)
    proc.start()
    try:
        port = ports.get(timeout=20)
        clients(port, pki, WARMUP)
        return clients(port, pki, seconds)
    finally:
        proc.terminate()
        proc.join(5)


def _report(layout, server, clients, pki, seconds: float, out: mp.Queue) -> None:
    out.put(layout(server, clients, pki, seconds))


def isolated(layout, server, clients, pki, seconds: float) -> float:
    """One measurement in fresh processes: no server, thread or timer of an earlier
    measurement (either stack's) is left to compete with it."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_report, args=(layout, server, clients, pki, seconds, out))
    proc.start()
    try:
        return out.get(timeout=seconds + 60)
    finally:
        proc.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of all four measurements, interleaved; medians are reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pki = write_pki(Path(tmp))
        backend = QuicSocket(socket.AF_INET).backend_name
        rates: dict[tuple[str, int], list[float]] = {}
        contenders = (("quichsd", quichsd_server, quichsd_clients),
                      ("aioquic", aioquic_server, aioquic_clients))
        for _ in range(args.rounds):
            for name, server, clients in contenders:
                for procs, layout in ((1, one_process), (2, two_processes)):
                    rate = isolated(layout, server, clients, pki, args.seconds)
                    rates.setdefault((name, procs), []).append(rate)
        print(f"quichsd backend: {backend}; median of {args.rounds} round(s), {args.seconds:g} s each")
        median = {key: statistics.median(values) for key, values in rates.items()}
        for procs in (1, 2):
            q, a = median[("quichsd", procs)], median[("aioquic", procs)]
            pairs = zip(rates[("quichsd", procs)], rates[("aioquic", procs)], strict=True)
            spread = " ".join(f"{x:.0f}/{y:.0f}" for x, y in pairs)
            print(f"{procs} process(es): quichsd {q:7.1f}/s  aioquic {a:7.1f}/s  ratio {q / a:.2f}  "
                  f"(rounds: {spread})")
        print(f"udp_handshake: quichsd/aioquic={median[('quichsd', 2)] / median[('aioquic', 2)]:.2f}")


if __name__ == "__main__":
    main()
