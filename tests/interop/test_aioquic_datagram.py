"""RFC 9221 DATAGRAM frames against aioquic (max_datagram_frame_size set on its side), both
ways: our socket sends with MSG_QUIC_DATAGRAM and reads MSG_QUIC_DATAGRAM items; aioquic
echoes them upper-cased, or sends its own to our echoing server."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import pytest

from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake
from quichsd.sock.base import RecvKind

aioquic = pytest.importorskip("aioquic", reason="aioquic (the test peer) is not installed")
from aioquic.asyncio import QuicConnectionProtocol, connect, serve  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import DatagramFrameReceived  # noqa: E402

pytestmark = pytest.mark.interop
L = abi.lib
LIMIT = 1400
OUR_PARAMS = abi.pack_transport_param(max_datagram_frame_size=LIMIT)
MESSAGES = [b"first", b"x" * 1000, b"last"]


def _next_datagram(sock: QuicSocket) -> bytes:
    while True:
        item = sock.recv_item(65536)
        if item.kind is RecvKind.DATAGRAM:
            assert item.msg_flags & 0x80  # whole (MSG_EOR)
            return item.data


class DatagramEcho(QuicConnectionProtocol):
    def quic_event_received(self, event) -> None:
        if isinstance(event, DatagramFrameReceived):
            self._quic.send_datagram_frame(event.data.upper())
            self.transmit()


def test_our_client_exchanges_datagrams_with_aioquic(pki) -> None:
    loop = asyncio.new_event_loop()
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["h3"], max_datagram_frame_size=65536)
    cfg.load_cert_chain(pki.cert_file, pki.key_file)
    server = loop.run_until_complete(serve("127.0.0.1", 0, configuration=cfg, create_protocol=DatagramEcho))
    port = server._transport.get_extra_info("sockname")[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        sock = QuicSocket(socket.AF_INET, backend="sim")
        sock.setsockopt(L.QUIC_SOCKOPT_TRANSPORT_PARAM, OUR_PARAMS)
        sock.connect(("127.0.0.1", port))
        with sock:
            quic_handshake(sock, HandshakeConfig(alpns=["h3"], hostname="localhost", cafile=pki.ca_file,
                                                 timeout=5))
            sock.settimeout(5)
            for message in MESSAGES:
                assert sock.send_stream(message, -1, 0, L.MSG_QUIC_DATAGRAM) == len(message)
                assert _next_datagram(sock) == message.upper()
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


class DatagramClient(QuicConnectionProtocol):
    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def quic_event_received(self, event) -> None:
        if isinstance(event, DatagramFrameReceived):
            self.received.put_nowait(event.data)


async def _aioquic_sends(port: int, pki) -> list[bytes]:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost",
                            max_datagram_frame_size=65536)
    cfg.load_verify_locations(pki.ca_file)
    answers = []
    async with connect("127.0.0.1", port, configuration=cfg, create_protocol=DatagramClient) as client:
        for message in MESSAGES:
            client._quic.send_datagram_frame(message)
            client.transmit()
            answers.append(await asyncio.wait_for(client.received.get(), 5))
    return answers


def test_aioquic_client_exchanges_datagrams_with_our_server(pki) -> None:
    listener = QuicSocket(socket.AF_INET, backend="sim")
    listener.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    listener.setsockopt(L.QUIC_SOCKOPT_TRANSPORT_PARAM, OUR_PARAMS)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)
    failures: list[BaseException] = []

    def echo() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                quic_handshake(conn, HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                                     key_file=pki.key_file, timeout=5))
                conn.settimeout(5)
                for _ in MESSAGES:
                    conn.send_stream(_next_datagram(conn).upper(), -1, 0, L.MSG_QUIC_DATAGRAM)
                with contextlib.suppress(OSError):  # until aioquic closes
                    conn.recv_item(1)
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    with listener:
        answers = asyncio.run(_aioquic_sends(listener.getsockname()[1], pki))
        thread.join(10)
    assert not failures, failures
    assert answers == [m.upper() for m in MESSAGES]
