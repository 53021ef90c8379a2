"""Over loopback UDP against aioquic's asyncio client and server (a QUIC stack no one
here wrote): our handshake on the simulation backend, both directions."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake
from tests.sockets import client_socket, echo_upper, exchange, started_peers

aioquic = pytest.importorskip("aioquic", reason="aioquic (the test peer) is not installed")
from aioquic.asyncio import QuicConnectionProtocol, connect, serve  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import StreamDataReceived  # noqa: E402
from aioquic.tls import SessionTicket  # noqa: E402

pytestmark = pytest.mark.interop
V1, V2 = 0x00000001, 0x6B3343CF
# The NEW_CONNECTION_IDs we issue to aioquic (its active_connection_id_limit is 8, our cap
# too: 7 besides the handshake's), sent in idle time after completion.
ISSUED_TO_AIOQUIC = 7


class Echo(QuicConnectionProtocol):
    def quic_event_received(self, event) -> None:
        if isinstance(event, StreamDataReceived):
            self._quic.send_stream_data(event.stream_id, event.data.upper(), event.end_stream)
            self.transmit()


class AioquicServer:
    """aioquic's asyncio server on its own loop in a thread."""

    def __init__(self, pki, *, version: int = V1, early: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.tickets: dict[bytes, SessionTicket] = {}
        cfg = QuicConfiguration(is_client=False, alpn_protocols=["h3", "smb"], supported_versions=[version, V1])
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

    def peer_cids(self) -> int:
        """How many of our CIDs aioquic's (only) connection holds unused."""
        (protocol,) = self.protocols
        return len(protocol._quic._peer_cid_available)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def aioquic_server(pki):
    yield from started_peers(AioquicServer, pki)


def our_client(pki, **kw) -> HandshakeConfig:
    return HandshakeConfig(**{**dict(alpns=["smb", "h3"], hostname="localhost", cafile=pki.ca_file, timeout=5), **kw})


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
        deadline = time.monotonic() + 2
        while srv.peer_cids() < ISSUED_TO_AIOQUIC and time.monotonic() < deadline:
            time.sleep(0.005)
        assert srv.peer_cids() == ISSUED_TO_AIOQUIC


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


async def _settle(ready, timeout: float = 2.0) -> None:  # noqa: ANN001
    """Poll `ready()` on the running loop (aioquic's datagrams arrive meanwhile) until it
    holds or `timeout` passes; the caller asserts what it needs."""
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


async def _aioquic_client(port: int, pki, *, version: int = V1, ticket: SessionTicket | None = None,
                          early: bytes | None = None, alpn: str = "h3",
                          wait_ticket: bool = False) -> tuple[bytes, list, dict]:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[alpn], server_name="localhost",
                            supported_versions=[version])
    cfg.load_verify_locations(pki.ca_file)
    cfg.session_ticket = ticket
    tickets: list[SessionTicket] = []
    async with connect("127.0.0.1", port, configuration=cfg, session_ticket_handler=tickets.append,
                       wait_connected=early is None) as client:
        reader, writer = await client.create_stream()
        writer.write(early or b"from aioquic")
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 5)
        info = {"resumed": client._quic.tls.session_resumed, "early": client._quic.tls.early_data_accepted,
                "alpn": client._quic.tls.alpn_negotiated}
        # the NEW_CONNECTION_IDs (and the ticket, when asked) come after the stream's answer
        await _settle(lambda: len(client._quic._peer_cid_available) >= ISSUED_TO_AIOQUIC
                      and (bool(tickets) or not wait_ticket))
        info["peer_cids"] = len(client._quic._peer_cid_available)
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
                                                key_file=pki.key_file, early_data=True, timeout=5), after=echo_upper)
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


def test_a_hello_no_listener_offers_gets_no_connection(pki, server_factory) -> None:
    """spec §2.7: the listener's ALPN does not include the client's, so the hello that
    names it is not dispatched; a later packet without a readable ALPN (aioquic's probe
    starts with PING) may reach the listener, whose handshake then refuses the ALPN.
    Either way no connection comes up."""
    srv = server_factory("sim", HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                                key_file=pki.key_file, timeout=5))
    with pytest.raises((asyncio.TimeoutError, ConnectionError)):
        asyncio.run(asyncio.wait_for(_aioquic_client(srv.address[1], pki, alpn="other"), 1.5))
    assert all(isinstance(r, Exception) for r in srv.results)
