"""Key updates (RFC 9001 §6) during a 10 MiB transfer against aioquic, both ways: each side
starts one in the middle and follows the other's; the bytes arrive intact, our socket is
told of aioquic's update (QUIC_EVENT_KEY_UPDATE) and aioquic ends on the phase ours moved
it to."""
from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import random
import socket
import threading

import pytest

from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake
from quichsd.kernel_numbers import QuicEvent
from tests.sock.pairs import stream_to_fin
from tests.sockets import client_socket

aioquic = pytest.importorskip("aioquic", reason="aioquic (the test peer) is not installed")
from aioquic import tls  # noqa: E402
from aioquic.asyncio import QuicConnectionProtocol, connect, serve  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import StreamDataReceived  # noqa: E402

pytestmark = pytest.mark.interop
L = abi.lib
MIB = 1 << 20
DATA = random.Random(13).randbytes(10 * MIB)
KEY_UPDATE_EVENT = bytes((QuicEvent.KEY_UPDATE, 1))


def _phase(protocol: QuicConnectionProtocol) -> int:
    """aioquic's current 1-RTT receive key phase."""
    return protocol._quic._cryptos[tls.Epoch.ONE_RTT].recv.key_phase


def _key_update_when_free(sock: QuicSocket) -> bool:
    try:
        sock.setsockopt(L.QUIC_SOCKOPT_KEY_UPDATE)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: the last update is still pending
            raise
        return False
    return True


class Digester(QuicConnectionProtocol):
    """aioquic's side of an upload: hashes one stream, starts a key update after 6 MiB,
    notes the key phases it saw, answers the digest with FIN."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.digest = hashlib.sha256()
        self.received = 0
        self.updated_at: int | None = None
        self.phases: set[int] = set()

    def quic_event_received(self, event) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        self.digest.update(event.data)
        self.received += len(event.data)
        self.phases.add(_phase(self))
        if self.updated_at is None and self.received >= 6 * MIB:
            self._quic.request_key_update()
            self.updated_at = self.received
        if event.end_stream:
            self._quic.send_stream_data(event.stream_id, self.digest.digest(), end_stream=True)
        self.transmit()


class AioquicServer:
    def __init__(self, pki) -> None:
        self.loop = asyncio.new_event_loop()
        cfg = QuicConfiguration(is_client=False, alpn_protocols=["h3"])
        cfg.load_cert_chain(pki.cert_file, pki.key_file)
        self.protocols: list[Digester] = []
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def start() -> None:
                self.server = await serve("127.0.0.1", 0, configuration=cfg, create_protocol=self._protocol)
                self.port = self.server._transport.get_extra_info("sockname")[1]
                ready.set()

            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(5)

    def _protocol(self, *args, **kw) -> Digester:
        protocol = Digester(*args, **kw)
        self.protocols.append(protocol)
        return protocol

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_our_client_uploads_across_key_updates_to_aioquic(pki) -> None:
    """We start an update after 3 MiB (aioquic follows: phase 1), aioquic one after 6 MiB
    (we follow and are told: phase 0)."""
    srv = AioquicServer(pki)
    try:
        with client_socket("sim", ("127.0.0.1", srv.port)) as sock:
            quic_handshake(sock, HandshakeConfig(alpns=["h3"], hostname="localhost", cafile=pki.ca_file,
                                                 timeout=5))
            sock.setsockopt(L.QUIC_SOCKOPT_EVENT, KEY_UPDATE_EVENT)
            sock.settimeout(30)
            ours: list[int] = []
            chunk = MIB // 4
            for offset in range(0, len(DATA), chunk):
                if offset >= 3 * MIB and not ours and _key_update_when_free(sock):
                    ours.append(offset)
                sock.send(DATA[offset:offset + chunk], -1, new=offset == 0, fin=offset + chunk >= len(DATA))
            events: list[bytes] = []
            digest = stream_to_fin(sock, events)
        (protocol,) = srv.protocols
        assert digest == hashlib.sha256(DATA).digest()
        assert ours and protocol.updated_at is not None
        assert protocol.phases == {0, 1}  # it read data in both phases
        assert events == [bytes((QuicEvent.KEY_UPDATE, 0))]  # aioquic's update, which we followed
    finally:
        srv.stop()


async def _aioquic_uploads(port: int, pki) -> tuple[bytes, int]:
    """aioquic's client: 3 MiB, a key update once our server has read them (it says so
    with one byte), the other 7 MiB, then our digest; returns it and aioquic's last phase."""
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost")
    cfg.load_verify_locations(pki.ca_file)
    async with connect("127.0.0.1", port, configuration=cfg) as client:
        reader, writer = await client.create_stream()
        writer.write(DATA[:3 * MIB])
        assert await asyncio.wait_for(reader.readexactly(1), 30) == b"3"
        assert _phase(client) == 0
        client._quic.request_key_update()
        writer.write(DATA[3 * MIB:])
        writer.write_eof()
        digest = await asyncio.wait_for(reader.read(), 30)
        return digest, _phase(client)


def test_aioquic_client_uploads_across_key_updates_to_our_server(pki) -> None:
    """aioquic starts an update after 3 MiB (we follow and are told: phase 1), our server
    one after reading 6 MiB (aioquic follows: phase 0)."""
    listener = QuicSocket(socket.AF_INET, backend="sim")
    listener.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)
    outcome: dict[str, object] = {}

    def serve_one() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                quic_handshake(conn, HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                                     key_file=pki.key_file, timeout=5))
                conn.setsockopt(L.QUIC_SOCKOPT_EVENT, KEY_UPDATE_EVENT)
                conn.settimeout(30)
                marks: list[str] = []

                def progress(read: int) -> None:
                    if read >= 3 * MIB and "told" not in marks:
                        conn.send(b"3", -1)  # aioquic's stream is our active one
                        marks.append("told")
                    if read >= 6 * MIB and "updated" not in marks and _key_update_when_free(conn):
                        marks.append("updated")

                events: list[bytes] = []
                got = stream_to_fin(conn, events, progress)
                conn.send(hashlib.sha256(got).digest(), -1, fin=True)
                outcome.update(events=events, marks=marks, length=len(got))
                with contextlib.suppress(OSError):  # until aioquic closes: our digest must reach it
                    conn.recv_item(1)
        except BaseException as exc:  # surfaced below
            outcome["failure"] = exc

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    with listener:
        digest, last = asyncio.run(_aioquic_uploads(listener.getsockname()[1], pki))
        thread.join(10)
    assert "failure" not in outcome, outcome["failure"]
    assert digest == hashlib.sha256(DATA).digest()
    assert outcome["length"] == len(DATA) and outcome["marks"] == ["told", "updated"]
    assert outcome["events"] == [bytes((QuicEvent.KEY_UPDATE, 1))]  # aioquic's update
    assert last == 0  # after its own update (the event above), aioquic followed ours back to 0
