"""Bulk transfers between our client and our server over real UDP, for the relay tests and
bench/throughput.py: one stream carries `size` bytes one way, with FIN; the receiver answers
the SHA-256 of what it got on the same stream. Also the small exchanges the migration
tests share (a free address, echo once)."""
from __future__ import annotations

import errno
import hashlib
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from quichsd import HandshakeConfig, QuicSocket, abi
from quichsd.sock.sim.simsocket import SimQuicSocket
from tests.sock.pairs import Address, handshaken_pair, stream_to_fin

__all__ = ["payload", "send_all", "recv_all", "TransferResult", "free_udp", "echo_once"]

CHUNK = 256 * 1024


def payload(size: int, seed: int = 7) -> bytes:
    """Repeatable bytes that are not all alike (a lost or shifted range changes the hash)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    block = bytes((b + i) & 0xFF for i, b in enumerate(block[:4099])) + block
    out = (block * (size // len(block) + 1))[:size]
    return out


def _credit(sock: QuicSocket, stream_id: int) -> bool:
    backend = sock.backend
    assert isinstance(backend, SimQuicSocket) and backend.conn is not None
    conn = backend.conn
    streams = conn.streams
    stream = streams.streams.get(stream_id)
    if stream is None or stream.send is None or conn.state.name == "CLOSED":
        return True
    return min(stream.send_max - stream.send.end, streams.send_max_data - streams.send_written) > 0


def send_all(sock: QuicSocket, data: bytes, stream_id: int, deadline: float, *, fin: bool = True) -> None:
    """Send `data` on `stream_id` (opened by the first send when new), waiting for
    flow-control credit on the simulation's endpoint when a send finds none."""
    view = memoryview(data)
    sent = 0
    while sent < len(data):
        try:
            n = sock.send(bytes(view[sent:sent + CHUNK]), stream_id,
                          fin=fin and sent + CHUNK >= len(data))
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
            n = 0
        sent += n
        if n == 0:
            backend = sock.backend
            assert isinstance(backend, SimQuicSocket) and backend.endpoint is not None
            with backend.endpoint.lock:
                if not backend.endpoint.wait_for(lambda: _credit(sock, stream_id), deadline):
                    raise TimeoutError(f"no flow-control credit after {sent} bytes")


def recv_all(sock: QuicSocket) -> tuple[int, str, int]:
    """Read one stream to its FIN: (stream id, SHA-256 hex, length)."""
    digest = hashlib.sha256()
    length, stream_id, fin = 0, -1, False
    while not fin:
        chunk, stream_id, fin = sock.recv(1 << 20)
        digest.update(chunk)
        length += len(chunk)
    return stream_id, digest.hexdigest(), length


@dataclass
class TransferResult:
    seconds: float
    intact: bool


def connected_pair(server_config: HandshakeConfig, client_config: HandshakeConfig,
                   route: Callable[[Address], Address] | None = None, *, timeout: float = 30.0,
                   congestion: int = 0, config: dict[str, int] | None = None
                   ) -> AbstractContextManager[tuple[QuicSocket, QuicSocket]]:
    """(client, server-side connection) after both handshakes on the simulation; `route(listener
    address)` gives the address the client connects to instead (a relay's); `congestion`: both
    ends' QUIC_SOCKOPT_CONFIG congestion_control_algo (0: left at the default); `config`:
    more QUIC_SOCKOPT_CONFIG fields for both ends."""
    fields = {**(config or {}), **({"congestion_control_algo": congestion} if congestion else {})}

    def configure(sock: QuicSocket) -> None:
        if fields:
            sock.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(**fields))

    def client_setup(sock: QuicSocket) -> None:
        sock.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, b"bulk")
        configure(sock)

    return handshaken_pair("sim", server_config, client_config, alpn=b"bulk", timeout=timeout,
                           setup=configure, client_setup=client_setup, route=route)


def transfer(client: QuicSocket, server: QuicSocket, data: bytes, *, upload: bool,
             timeout: float = 60.0) -> TransferResult:
    """`data` one way (client to server if `upload`), the hash back; timed from the first
    send to the hash's arrival."""
    import threading
    sender, receiver = (client, server) if upload else (server, client)
    got: list[tuple[int, str, int]] = []
    failures: list[BaseException] = []

    def receive() -> None:
        try:
            stream_id, digest, length = recv_all(receiver)
            got.append((stream_id, digest, length))
            receiver.send(digest.encode(), stream_id, fin=True)
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    start = time.monotonic()
    stream_id = 0 if upload else 1
    send_all(sender, data, stream_id, start + timeout)
    answer = b""
    fin = False
    while not fin:
        chunk, _, fin = sender.recv()
        answer += chunk
    seconds = time.monotonic() - start
    thread.join(timeout)
    if failures:
        raise failures[0]
    return TransferResult(seconds, answer.decode() == hashlib.sha256(data).hexdigest())


def free_udp(host: str = "127.0.0.1") -> tuple[str, int]:
    """An address with a port nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()


def echo_once(sock: QuicSocket, events: list[bytes], want_event: bool) -> None:
    data = stream_to_fin(sock, events, want_event=want_event)
    sock.send(data, -1, fin=True)
