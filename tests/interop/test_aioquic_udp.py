"""Over loopback UDP against aioquic's asyncio client and server (a QUIC stack no one
here wrote): our handshake on the simulation backend, both directions."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable

import pytest

from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake
from tests.sockets import client_socket, echo_upper, exchange, started_peers

aioquic = pytest.importorskip("aioquic", reason="aioquic (the test peer) is not installed")
from aioquic.asyncio import QuicConnectionProtocol, connect, serve  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived  # noqa: E402
from aioquic.tls import SessionTicket  # noqa: E402

pytestmark = pytest.mark.interop
V1, V2 = 0x00000001, 0x6B3343CF
# The NEW_CONNECTION_IDs we issue to aioquic (its active_connection_id_limit is 8, our cap
# too: 7 besides the handshake's), sent in idle time after completion.
ISSUED_TO_AIOQUIC = 7


class Watched(QuicConnectionProtocol):
    """An aioquic connection a test can wait on: settle() re-checks its condition after
    every datagram aioquic has handled, on aioquic's own loop."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self._datagram_handled = asyncio.Event()

    def datagram_received(self, data, addr) -> None:
        super().datagram_received(data, addr)
        self._datagram_handled.set()

    async def settle(self, ready: Callable[[], bool], timeout: float = 2.0) -> None:
        """Until `ready()` holds or `timeout` passes; the caller asserts what it needs."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not ready():
                    self._datagram_handled.clear()
                    await self._datagram_handled.wait()

    def peer_cids(self) -> int:
        """How many of our connection IDs aioquic holds unused (RFC 9000 §5.1.1)."""
        return len(self._quic._peer_cid_available)


class Echo(Watched):
    def quic_event_received(self, event) -> None:
        if isinstance(event, StreamDataReceived):
            self._quic.send_stream_data(event.stream_id, event.data.upper(), event.end_stream)
            self.transmit()


class AioquicServer:
    """aioquic's asyncio server on its own loop in a thread."""

    def __init__(self, pki, *, version: int = V1, early: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.tickets: dict[bytes, SessionTicket] = {}
        cfg = QuicConfiguration(is_client=False, alpn_protocols=["h3", "smb"],
                                supported_versions=[version, V1])
        cfg.load_cert_chain(pki.cert_file, pki.key_file)
        self.cfg = cfg
        self.early = early
        self.protocols: list[Echo] = []
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = await serve(
                "127.0.0.1", 0, configuration=self.cfg, create_protocol=self._protocol,
                session_ticket_fetcher=self.tickets.pop if self.early else self.tickets.get,
                session_ticket_handler=lambda t: self.tickets.__setitem__(t.ticket, t),
            )
            self.port = self.server._transport.get_extra_info("sockname")[1]
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def _protocol(self, *args, **kw) -> Echo:
        protocol = Echo(*args, **kw)
        self.protocols.append(protocol)
        return protocol

    def settled_peer_cids(self, count: int, timeout: float = 2.0) -> int:
        """How many of our CIDs aioquic's (only) connection holds unused, once it holds
        `count` or `timeout` has passed."""
        (protocol,) = self.protocols

        async def settled() -> int:
            await protocol.settle(lambda: protocol.peer_cids() >= count, timeout)
            return protocol.peer_cids()

        return asyncio.run_coroutine_threadsafe(settled(), self.loop).result(timeout + 5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def aioquic_server(pki):
    yield from started_peers(AioquicServer, pki)


def our_client(pki, **kw) -> HandshakeConfig:
    base = dict(alpns=["smb", "h3"], hostname="localhost", cafile=pki.ca_file, timeout=5)
    return HandshakeConfig(**{**base, **kw})


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_our_client_against_aioquic_server(pki, aioquic_server, version) -> None:
    srv = aioquic_server(version=version)
    sock = QuicSocket(socket.AF_INET, backend="sim")
    sock.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(version=version))
    sock.connect(("127.0.0.1", srv.port))
    with sock:
        result = quic_handshake(sock, our_client(pki))
        assert result.alpn == "h3"  # aioquic chooses by its own preference order
        assert exchange(sock, b"over the wire") == b"OVER THE WIRE"
        assert srv.settled_peer_cids(ISSUED_TO_AIOQUIC) == ISSUED_TO_AIOQUIC


def test_our_client_resumes_with_0rtt_against_aioquic(pki, aioquic_server) -> None:
    srv = aioquic_server()
    with client_socket("sim", ("127.0.0.1", srv.port)) as sock:
        first = quic_handshake(sock, our_client(pki, ticket_wait=3))
    assert first.session_data
    with client_socket("sim", ("127.0.0.1", srv.port)) as sock:
        second = quic_handshake(sock, our_client(pki, session_data=first.session_data, early_data=True,
                                                 early_stream_data=b"zero rtt"))
        assert second.resumed and second.early_data_accepted
        sock.settimeout(5)
        data, _, _ = sock.recv()
        assert data == b"ZERO RTT"


async def _aioquic_client(port: int, pki, *, version: int = V1, ticket: SessionTicket | None = None,
                          early: bytes | None = None, alpn: str = "h3",
                          wait_ticket: bool = False) -> tuple[bytes, list, dict]:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[alpn], server_name="localhost",
                            supported_versions=[version])
    cfg.load_verify_locations(pki.ca_file)
    cfg.session_ticket = ticket
    tickets: list[SessionTicket] = []
    async with connect("127.0.0.1", port, configuration=cfg, session_ticket_handler=tickets.append,
                       create_protocol=Watched, wait_connected=early is None) as client:
        reader, writer = await client.create_stream()
        writer.write(early or b"from aioquic")
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 5)
        tls = client._quic.tls
        info = {"resumed": tls.session_resumed, "early": tls.early_data_accepted, "alpn": tls.alpn_negotiated}
        # the NEW_CONNECTION_IDs (and the ticket, when asked) come after the stream's answer
        await client.settle(lambda: client.peer_cids() >= ISSUED_TO_AIOQUIC
                            and (bool(tickets) or not wait_ticket))
        info["peer_cids"] = client.peer_cids()
    return data, tickets, info


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_aioquic_client_against_our_server(pki, server_factory, version) -> None:
    srv = server_factory("sim", HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                                key_file=pki.key_file, timeout=5), after=echo_upper)
    data, _, info = asyncio.run(_aioquic_client(srv.address[1], pki, version=version))
    assert data == b"FROM AIOQUIC" and info["alpn"] == "h3"
    assert info["peer_cids"] == ISSUED_TO_AIOQUIC
    assert srv.wait()[0].alpn == "h3"


def test_aioquic_client_resumes_with_0rtt_on_our_server(pki, server_factory) -> None:
    srv = server_factory("sim", HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                                key_file=pki.key_file, early_data=True, timeout=5),
                         after=echo_upper)
    _, tickets, _ = asyncio.run(_aioquic_client(srv.address[1], pki, wait_ticket=True))
    assert tickets, "our server sent no NewSessionTicket"
    data, _, info = asyncio.run(_aioquic_client(srv.address[1], pki, ticket=tickets[0], early=b"early bird"))
    assert data == b"EARLY BIRD"
    assert info["resumed"] and info["early"]
    second = srv.wait(2)[1]
    assert second.resumed and second.early_data_accepted


def test_aioquic_client_with_unknown_alpn_gets_no_application_protocol(pki, server_factory) -> None:
    """The listener takes the hello (its ALPN list has "other"); the handshake offers only
    h3, so the server fails with no_application_protocol and closes with 0x178."""
    srv = server_factory("sim", HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                                key_file=pki.key_file, timeout=5), alpn=b"h3,other")
    with pytest.raises(ConnectionError):
        asyncio.run(asyncio.wait_for(_aioquic_client(srv.address[1], pki, alpn="other"), 5))
    (failure,) = srv.wait()
    assert failure.alert.name == "no_application_protocol"


class Refused(Watched):
    """An aioquic client connection that keeps the close that ended it."""

    terminated: ConnectionTerminated | None = None

    def quic_event_received(self, event) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
        super().quic_event_received(event)


async def _aioquic_refused(port: int, pki, alpn: str) -> ConnectionTerminated | None:
    """Connect offering only `alpn`; the close aioquic got, once connecting failed."""
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[alpn], server_name="localhost")
    cfg.load_verify_locations(pki.ca_file)
    made: list[Refused] = []

    def protocol(*args, **kw) -> Refused:
        made.append(Refused(*args, **kw))
        return made[-1]

    with pytest.raises(ConnectionError):
        async with connect("127.0.0.1", port, configuration=cfg, create_protocol=protocol):
            pass
    return made[0].terminated


def test_a_hello_no_listener_offers_is_refused_with_no_application_protocol(pki, server_factory) -> None:
    """spec §2.7: the listener's ALPN list does not include the client's, so the hello is
    not dispatched to it. The simulation's endpoint answers statelessly with a
    CONNECTION_CLOSE of no_application_protocol (0x178, RFC 9001 §8.1), so aioquic fails
    at once; the kernel drops the Initial without a word (spec §9) and the client would
    wait out its timeout. The listener never gets a connection."""
    srv = server_factory("sim", HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                                key_file=pki.key_file, timeout=5))
    closed = asyncio.run(asyncio.wait_for(_aioquic_refused(srv.address[1], pki, alpn="other"), 5))
    assert closed is not None and closed.error_code == 0x178
    assert all(isinstance(r, Exception) for r in srv.results)
