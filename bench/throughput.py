"""Bulk throughput over loopback UDP: 10 MiB one way on one stream, quichsd's client to
quichsd's server (the simulation where the kernel has no IPPROTO_QUIC) against aioquic's
client to aioquic's server, both pairs in one process, in one run; and, as the floor, the
AES-128-GCM seal + open of the same bytes in the same packet-sized chunks through
`cryptography` (the AEAD work any stack must do; no header protection, no framing).

Each side's time runs from the first byte handed to the stack to the receiver's SHA-256
of everything coming back; rounds interleave, medians are reported (of the floors, the
median of each round's best of three). Ends with
`throughput: quichsd/aioquic=R1 time/floor=R2`, R1 = aioquic's time / quichsd's,
R2 = quichsd's time / the floor's.

What the floor leaves out, measured alongside so R2 can be judged (the `floors:` line):
`udp`, the bare sendto/recv of as many 1200-byte datagrams, one per system call (what a
packet-at-a-time stack pays, aioquic included); `gso`, the same datagrams 64 per system
call with UDP_SEGMENT/UDP_GRO where the kernel has them (what quichsd's simulation pays);
and `bare`, the least a Python stack does per packet, in one function each way and nothing
else: a short header, seal, header protection (an AES-ECB mask) on one side, unmask and
open on the other, the datagrams through GSO/GRO -- no frames, ACKs, recovery or streams.
bare/floor is what any Python stack with 1200-byte packets is bound to exceed.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import select
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from quichsd import HandshakeConfig  # noqa: E402
from quichsd.devcerts import PkiFiles, write_pki  # noqa: E402
from quichsd.sock.sim.udp_io import UdpIO  # noqa: E402
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


def _loopback_pair() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx.connect(rx.getsockname())
    return rx, tx


BURST = 64  # datagrams in flight at once: what the socket buffer holds


def udp_time(data: bytes) -> float:
    """Sending and receiving as many 1200-byte datagrams on loopback, one per system call,
    in bursts the socket buffer holds (what any packet-at-a-time stack pays on top of the
    AEAD)."""
    count = -(-len(data) // CHUNK)
    datagram = bytes(1200)
    rx, tx = _loopback_pair()
    with rx, tx:
        start = time.perf_counter()
        for burst in range(0, count, BURST):
            n = min(BURST, count - burst)
            for _ in range(n):
                tx.send(datagram)
            for _ in range(n):
                rx.recv(2048)
        return time.perf_counter() - start


def _moved(data: bytes, seal: Callable[[int, memoryview], bytes], open_: Callable[[bytes], object]) -> float:
    """`data` in CHUNK-sized packets: sealed, 64 datagrams per UdpIO send (GSO where the
    kernel has it), read back (GRO) and opened; the seconds it took."""
    rx, tx = _loopback_pair()
    with rx, tx:
        rx.setblocking(False)
        send, receive = UdpIO(tx), UdpIO(rx)
        to = rx.getsockname()
        view = memoryview(data)
        offsets = range(0, len(data), CHUNK)
        start = time.perf_counter()
        for burst in range(0, len(offsets), BURST):
            pns = range(burst, min(burst + BURST, len(offsets)))
            send.send([(seal(pn, view[offsets[pn]:offsets[pn] + CHUNK]), to) for pn in pns])
            got = 0
            while got < len(pns):
                try:
                    datagrams, _ = receive.receive()
                except BlockingIOError:
                    select.select([rx], [], [])
                    continue
                for datagram in datagrams:
                    open_(datagram)
                got += len(datagrams)
        return time.perf_counter() - start


def gso_time(data: bytes) -> float:
    """The same datagrams as udp_time, 64 per system call (UDP_SEGMENT/UDP_GRO), nothing
    done to them."""
    datagram = bytes(1200)
    return _moved(data, lambda pn, chunk: datagram, lambda d: None)


def bare_time(data: bytes) -> float:
    """The least per-packet Python: a 1-RTT short header (8-byte CID, 2-byte packet
    number), AES-128-GCM seal, header protection (RFC 9001 §5.4: an AES-ECB mask of a
    sample, XORed into the first byte and the packet number); unmask and open at the
    other end. One function call per packet each way, the datagrams through GSO/GRO."""
    aead = AESGCM(os.urandom(16))
    iv = int.from_bytes(os.urandom(12), "big")
    hp = Cipher(algorithms.AES(os.urandom(16)), modes.ECB()).encryptor()
    cid = os.urandom(8)

    def seal(pn: int, chunk: memoryview) -> bytes:
        header = b"\x41" + cid + (pn & 0xFFFF).to_bytes(2, "big")
        sealed = aead.encrypt((iv ^ pn).to_bytes(12, "big"), chunk, header)
        mask = hp.update(sealed[2:18])
        first = header[0] ^ (mask[0] & 0x1F)
        pn_bytes = (int.from_bytes(header[9:11], "big") ^ int.from_bytes(mask[1:3], "big")).to_bytes(2, "big")
        return bytes((first,)) + cid + pn_bytes + sealed

    def open_(datagram: bytes) -> bytes:
        mask = hp.update(datagram[13:29])
        first = datagram[0] ^ (mask[0] & 0x1F)
        pn = int.from_bytes(datagram[9:11], "big") ^ int.from_bytes(mask[1:3], "big")
        header = bytes((first,)) + datagram[1:9] + pn.to_bytes(2, "big")
        return aead.decrypt((iv ^ pn).to_bytes(12, "big"), datagram[11:], header)

    return _moved(data, seal, open_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=10.0, help="bytes to move, in MiB (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--only", choices=("quichsd", "aioquic", "floor"), help="measure one contender")
    args = parser.parse_args()
    data = payload(int(args.mib * MIB))
    contenders = {"quichsd": quichsd_time, "aioquic": aioquic_time}
    names = ("quichsd", "aioquic", "floor", "udp", "gso", "bare")
    times: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        pki = write_pki(Path(tmp))
        for rnd in range(args.rounds):
            for name, measure in contenders.items():
                if args.only in (None, name):
                    times[name].append(measure(pki, data))
            if args.only in (None, "floor"):
                for name, floor in (("floor", floor_time), ("udp", udp_time), ("gso", gso_time),
                                    ("bare", bare_time)):
                    # Best of three: these take 10-100 ms, and one preemption on a busy
                    # machine would be a large part of that.
                    times[name].append(min(floor(data) for _ in range(3)))
            print(f"round {rnd + 1}: " + "  ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items() if v),
                  flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    packets = -(-len(data) // CHUNK)
    for name, seconds in med.items():
        print(f"{name:8s} median {seconds:.3f} s  {len(data) / seconds / MIB:8.1f} MiB/s  "
              f"{seconds / packets * 1e6:6.2f} us per packet")
    if args.only in (None, "floor"):
        floor = med["floor"]
        print(f"floors: udp/floor={med['udp'] / floor:.2f} gso/floor={med['gso'] / floor:.2f} "
              f"bare/floor={med['bare'] / floor:.2f} (bare: the least per-packet Python, see above)")
    if args.only is None:
        print(f"throughput: quichsd/aioquic={med['aioquic'] / med['quichsd']:.2f} "
              f"time/floor={med['quichsd'] / med['floor']:.2f}")


if __name__ == "__main__":
    main()
