"""A picoquic peer for the interop tests, through aiopquic (Python >= 3.12).

Run with .venv-peer/bin/python, never imported by the tests: it uses only aiopquic and the
standard library.

    server --cert C --key K --alpn h3,smb [--groups 23,29] [--port P]
        prints {"port": N} once listening, then one JSON line per connection event
        ({"event": "handshake", "alpn": ..., "resumed": ...}, {"event": "data", ...},
        {"event": "closed", "error": ...}); echoes each stream upper-cased, with FIN.
        Runs until stdin reaches EOF.
    client --port N --alpn h3 --cafile CA [--server-name localhost] [--ticket-file F]
           [--early] [--data D] [--version v1|v2] [--groups ...] [--cert C --key K]
        prints one JSON line: alpn, resumed, echo, close_error, error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

from aiopquic.asyncio import QuicConnectionProtocol, connect, serve
from aiopquic.quic.configuration import QUIC_V1, QUIC_V2, QuicConfiguration
from aiopquic.quic.events import ConnectionTerminated, HandshakeCompleted, StreamDataReceived

VERSIONS = {"v1": [QUIC_V1], "v2": [QUIC_V2, QUIC_V1]}


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def groups(text: str | None) -> list[int] | None:
    return [int(g, 0) for g in text.split(",")] if text else None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerEcho(QuicConnectionProtocol):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.buffers: dict[int, bytearray] = {}

    def quic_event_received(self, event) -> None:
        if isinstance(event, HandshakeCompleted):
            emit({"event": "handshake", "alpn": event.alpn_protocol, "resumed": event.session_resumed})
        elif isinstance(event, StreamDataReceived):
            buf = self.buffers.setdefault(event.stream_id, bytearray())
            buf += bytes(event.data)
            if event.end_stream:
                data = bytes(self.buffers.pop(event.stream_id))
                emit({"event": "data", "stream": event.stream_id, "data": data.decode("latin-1")})
                self._quic.send_stream_data(event.stream_id, data.upper(), end_stream=True)
        elif isinstance(event, ConnectionTerminated):
            emit({"event": "closed", "error": event.error_code})


async def run_server(args) -> None:
    cfg = QuicConfiguration(is_client=False, alpn_protocols=args.alpn.split(","),
                            key_exchange_groups=groups(args.groups), ip_family=socket.AF_INET,
                            idle_timeout=10.0, congestion_control_algorithm="newreno")
    cfg.load_cert_chain(args.cert, args.key)
    port = args.port or free_udp_port()
    server = await serve("127.0.0.1", port, configuration=cfg, create_protocol=ServerEcho)
    emit({"port": port})
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    finally:
        server.close()


class ClientCollect(QuicConnectionProtocol):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.echo = bytearray()
        self.done = asyncio.Event()
        self.handshake: HandshakeCompleted | None = None
        self.close_error: int | None = None

    def quic_event_received(self, event) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake = event
        elif isinstance(event, StreamDataReceived):
            self.echo += bytes(event.data)
            if event.end_stream:
                self.done.set()
        elif isinstance(event, ConnectionTerminated):
            self.close_error = event.error_code
            self.done.set()


async def run_client(args) -> dict:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=args.alpn.split(","),
                            server_name=args.server_name, cafile=args.cafile,
                            supported_versions=VERSIONS[args.version],
                            key_exchange_groups=groups(args.groups),
                            session_ticket_file=args.ticket_file, ip_family=socket.AF_INET,
                            idle_timeout=10.0, congestion_control_algorithm="newreno")
    if args.cert:
        cfg.load_cert_chain(args.cert, args.key)
    out: dict = {"alpn": None, "resumed": None, "echo": None, "close_error": None, "error": None}
    try:
        async with connect(args.host, args.port, configuration=cfg, create_protocol=ClientCollect,
                           wait_connected=not args.early) as proto:
            quic = proto._quic
            sid = quic.get_next_available_stream_id()
            quic.send_stream_data(sid, args.data.encode(), end_stream=True)  # 0-RTT with --early
            await asyncio.wait_for(proto.done.wait(), args.timeout)
            if proto.handshake is None:  # a close before the handshake finished
                await asyncio.wait_for(proto.wait_connected(), args.timeout)
            out["echo"] = bytes(proto.echo).decode("latin-1")
            # No wait for the server's NewSessionTicket before the store is saved at the end:
            # it left before the echo (quichsd's server sends it within quic_handshake, the
            # tests' echo after), and picoquic handles a packet's frames in order.
            out["close_error"] = proto.close_error
            if proto.handshake is not None:
                out["alpn"] = proto.handshake.alpn_protocol
                out["resumed"] = proto.handshake.session_resumed
    except (ConnectionError, TimeoutError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--alpn", default="h3")
    s.add_argument("--groups")
    s.add_argument("--port", type=int, default=0)
    c = sub.add_parser("client")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--alpn", default="h3")
    c.add_argument("--cafile", required=True)
    c.add_argument("--server-name", default="localhost")
    c.add_argument("--ticket-file")
    c.add_argument("--early", action="store_true")
    c.add_argument("--data", default="from picoquic")
    c.add_argument("--version", choices=sorted(VERSIONS), default="v1")
    c.add_argument("--groups")
    c.add_argument("--cert")
    c.add_argument("--key")
    c.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args()
    if args.role == "server":
        asyncio.run(run_server(args))
    else:
        emit(asyncio.run(run_client(args)))


if __name__ == "__main__":
    main()
