"""Bulk throughput over loopback UDP: 10 MiB one way on one stream, quichsd's client to
quichsd's server (the simulation where the kernel has no IPPROTO_QUIC) against aioquic's
client to aioquic's server, both pairs in one process, in one run; and, as the floor, the
AES-128-GCM seal + open of the same bytes in the same packet-sized chunks through
`cryptography` (the AEAD work any stack must do; no header protection, no framing).

Each side's time runs from the first byte handed to the stack to the receiver's SHA-256
of everything coming back; rounds interleave, medians are reported. Ends with
`throughput: quichsd/aioquic=R1 time/floor=R2`, R1 = aioquic's time / quichsd's,
R2 = quichsd's time / the floor's. For context it also times the bare UDP syscalls for
as many 1200-byte datagrams (`udp`), which no packet-at-a-time stack avoids.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from quichsd import HandshakeConfig  # noqa: E402
from quichsd.devcerts import PkiFiles, write_pki  # noqa: E402
from tests.sim.transfer import connected_pair, payload, transfer  # noqa: E402

MIB = 1 << 20
# The stream bytes one full 1200-byte 1-RTT packet carries: 1200 less the short header
# (1 + 8-byte CID + 2-byte packet number), the AEAD tag (16) and the STREAM frame's header
# (type, stream id, 4-byte offset, 2-byte length).
CHUNK = 1200 - (1 + 8 + 2) - 16 - (1 + 1 + 4 + 2)


def quichsd_time(pki: PkiFiles, data: bytes) -> float:
    server = HandshakeConfig(server=True, alpns=["bulk"], cert_file=pki.cert_file, key_file=pki.key_file,
                             timeout=10)
    client = HandshakeConfig(alpns=["bulk"], hostname="localhost", cafile=pki.ca_file, timeout=10)
    with connected_pair(server, client) as (c, s):
        result = transfer(c, s, data, upload=True, timeout=120)
    if not result.intact:
        raise SystemExit("quichsd: the data arrived damaged")
    return result.seconds


def aioquic_time(pki: PkiFiles, data: bytes) -> float:
    from aioquic.asyncio import QuicConnectionProtocol, connect, serve
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import QuicEvent, StreamDataReceived

    class Sink(QuicConnectionProtocol):
        """Server: hash one stream to its FIN, answer the hex digest on it."""

        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            self.digest = hashlib.sha256()

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, StreamDataReceived):
                self.digest.update(event.data)
                if event.end_stream:
                    self._quic.send_stream_data(event.stream_id, self.digest.hexdigest().encode(), True)
                    self.transmit()

    class Source(QuicConnectionProtocol):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            self.answer = b""
            self.done = asyncio.get_event_loop().create_future()

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, StreamDataReceived):
                self.answer += event.data
                if event.end_stream and not self.done.done():
                    self.done.set_result(self.answer)

    async def main() -> float:
        scfg = QuicConfiguration(is_client=False, alpn_protocols=["bulk"])
        scfg.load_cert_chain(pki.cert_file, pki.key_file)
        server = await serve("127.0.0.1", 0, configuration=scfg, create_protocol=Sink)
        port = server._transport.get_extra_info("sockname")[1]
        ccfg = QuicConfiguration(is_client=True, alpn_protocols=["bulk"], server_name="localhost",
                                 verify_mode=ssl.CERT_REQUIRED)
        ccfg.load_verify_locations(pki.ca_file)
        try:
            async with connect("127.0.0.1", port, configuration=ccfg, create_protocol=Source) as client:
                assert isinstance(client, Source)
                start = time.monotonic()
                stream_id = client._quic.get_next_available_stream_id()
                client._quic.send_stream_data(stream_id, data, True)
                client.transmit()
                answer = await asyncio.wait_for(client.done, 120)
                seconds = time.monotonic() - start
        finally:
            server.close()
        if answer.decode() != hashlib.sha256(data).hexdigest():
            raise SystemExit("aioquic: the data arrived damaged")
        return seconds

    return asyncio.run(main())


def floor_time(data: bytes) -> float:
    """AES-128-GCM seal then open of `data` in CHUNK-sized packets, a fresh nonce each."""
    aead = AESGCM(os.urandom(16))
    iv = os.urandom(12)
    header = bytes(12)
    view = memoryview(data)
    start = time.perf_counter()
    for pn, offset in enumerate(range(0, len(data), CHUNK)):
        nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
        sealed = aead.encrypt(nonce, view[offset:offset + CHUNK], header)
        aead.decrypt(nonce, sealed, header)
    return time.perf_counter() - start


def udp_time(data: bytes) -> float:
    """Context, not the floor: sending and receiving the same number of 1200-byte datagrams
    on loopback, in bursts the socket buffer holds (the syscalls any packet-at-a-time
    userspace stack pays on top of the AEAD)."""
    count = -(-len(data) // CHUNK)
    datagram = bytes(1200)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.connect(rx.getsockname())
        start = time.perf_counter()
        for burst in range(0, count, 64):
            n = min(64, count - burst)
            for _ in range(n):
                tx.send(datagram)
            for _ in range(n):
                rx.recv(2048)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=10.0, help="bytes to move, in MiB (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--only", choices=("quichsd", "aioquic", "floor"), help="measure one contender")
    args = parser.parse_args()
    data = payload(int(args.mib * MIB))
    contenders = {"quichsd": quichsd_time, "aioquic": aioquic_time}
    times: dict[str, list[float]] = {"quichsd": [], "aioquic": [], "floor": [], "udp": []}
    with tempfile.TemporaryDirectory() as tmp:
        pki = write_pki(Path(tmp))
        for rnd in range(args.rounds):
            for name, measure in contenders.items():
                if args.only in (None, name):
                    times[name].append(measure(pki, data))
            if args.only in (None, "floor"):
                times["floor"].append(floor_time(data))
                times["udp"].append(udp_time(data))
            print(f"round {rnd + 1}: " + "  ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items() if v),
                  flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    for name, seconds in med.items():
        print(f"{name:8s} median {seconds:.3f} s  {len(data) / seconds / MIB:8.1f} MiB/s")
    if args.only is None:
        print(f"throughput: quichsd/aioquic={med['aioquic'] / med['quichsd']:.2f} "
              f"time/floor={med['quichsd'] / med['floor']:.2f}")


if __name__ == "__main__":
    main()
