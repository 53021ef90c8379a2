"""Run SimConnections in memory: our TLS engine drives each one as the kernel + handshake
agent would (spec §2.4), datagrams move between two peers on a simulated clock, and
aioquic's sans-I/O QuicConnection can stand on either side.

A peer is anything with `send(now) -> [bytes]`, `recv(data, now)`, `timer()`,
`on_timer(now)` and `pump(now)` (the application/agent step run after each delivery), and
optionally `idle(now)` (what the endpoint does once the datagrams are out and the agent
waits: SimConnection.idle_work).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.serialization import Encoding

from quichsd.devcerts import NOW, demo_ca, leaf
from quichsd.quic.address_token import AddressTokens, TokenKind
from quichsd.sock.sim import SimConnection, parse_initial_header
from quichsd.sock.sim.packets import parse_header
from quichsd.sock.sim.state import ConnState
from quichsd.tls.certs import TrustStore
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import Credentials, ServerChoice, TlsConfig
from quichsd.tls.constants import CryptoLevel, Direction
from quichsd.tls.engine import TlsEngine
from quichsd.tls.errors import TlsError
from quichsd.tls.events import (
    ClientHelloReceived,
    HandshakeComplete,
    InstallSecret,
    PeerTransportParameters,
    SendHandshake,
    SessionTicketReceived,
)
from quichsd.tls.server import ServerEngine

ALPN = b"quichsd-sim"
V1, V2 = 0x00000001, 0x6B3343CF
START = NOW.timestamp() + 3600.0
ADDR_C, ADDR_S = ("127.0.0.1", 40001), ("127.0.0.1", 4433)


def trust() -> TrustStore:
    return TrustStore.from_certificates([demo_ca().cert])


def ca_pem() -> bytes:
    return demo_ca().cert.public_bytes(Encoding.PEM)


def credentials() -> Credentials:
    cert, key = leaf("p256")
    return Credentials([cert], key)


_TICKET_KEY = os.urandom(64)
_TOKENS = AddressTokens()


# ---- our side: SimConnection + TLS engine ---------------------------------------------------


class SimAgent:
    """One SimConnection with its handshake agent (the libquic loop of spec §2.4-2.5)."""

    def __init__(self, conn: SimConnection | None, engine: TlsEngine | None) -> None:
        self.conn = conn
        self.engine = engine
        self.completed = False  # the APP receive secret went in
        self.done: HandshakeComplete | None = None
        self.session = None
        self.tls_error: TlsError | None = None
        self.received: dict[int, bytearray] = {}
        self.finished: set[int] = set()
        self.echo = False

    # the agent
    def _handle(self, events: list, now: float) -> None:
        conn = self.conn
        assert conn is not None
        sends: list[SendHandshake] = []
        for event in events:
            if isinstance(event, InstallSecret):
                if self.completed:
                    continue  # §2.5: secrets after completion are ignored
                conn.install_secret(int(event.level), event.direction == Direction.SEND,
                                    event.cipher_type, event.secret)
                if event.level == CryptoLevel.APP and event.direction == Direction.RECV:
                    self.completed = True
            elif isinstance(event, SendHandshake):
                sends.append(event)
            elif isinstance(event, PeerTransportParameters):
                conn.set_peer_transport_params_blob(event.data)
            elif isinstance(event, HandshakeComplete):
                self.done = event
            elif isinstance(event, SessionTicketReceived):
                self.session = event.session
        for i, event in enumerate(sends):  # MSG_MORE on all but the last (spec §2.3)
            conn.send_crypto(int(event.level), event.data, more=i < len(sends) - 1)

    def start(self, now: float) -> None:
        assert isinstance(self.engine, ClientEngine)
        self._handle(self.engine.start(now), now)

    def pump(self, now: float) -> None:
        conn, engine = self.conn, self.engine
        if conn is None or engine is None:
            return
        while (item := conn.recv_crypto(65536)) is not None:
            level, data, _eor = item
            try:
                events = engine.receive(CryptoLevel(level), data, now)
                if events and isinstance(events[-1], ClientHelloReceived):
                    # Spec §2.4 server step 3: the client's blob first, then ours.
                    self._handle(events[:-1], now)
                    conn.set_peer_transport_params_blob(events[-1].info.transport_parameters)
                    choice = ServerChoice(transport_parameters=conn.local_transport_params_blob())
                    events = engine.choose(choice, now)  # type: ignore[attr-defined]
                self._handle(events, now)
            except TlsError as exc:
                self.tls_error = exc
                conn.close(None)
                return
        while (got := conn.stream_recv(65536)) is not None:
            stream_id, data, fin = got
            self.received.setdefault(stream_id, bytearray()).extend(data)
            if fin:
                self.finished.add(stream_id)
                if self.echo:
                    conn.stream_send(stream_id, bytes(self.received[stream_id]), fin=True)

    def feed_ticket(self, now: float) -> None:
        """What quic_session_get_data does: hand the captured NewSessionTicket to TLS."""
        assert self.conn is not None and self.engine is not None
        ticket = self.conn.session_ticket()
        if ticket:
            self._handle(self.engine.receive(CryptoLevel.APP, ticket, now), now)

    # the network side
    def send(self, now: float) -> list[bytes]:
        return [] if self.conn is None else [d for d, _ in self.conn.datagrams_to_send(now)]

    def recv(self, data: bytes, now: float) -> None:
        if self.conn is not None:
            self.conn.receive_datagram(data, ADDR_C, now)

    def timer(self) -> float | None:
        return None if self.conn is None else self.conn.get_timer()

    def on_timer(self, now: float) -> None:
        if self.conn is not None:
            self.conn.handle_timer(now)

    def idle(self, now: float) -> None:
        if self.conn is not None:
            self.conn.idle_work()


def sim_client(now: float = START, *, version: int = V1, session=None, early_data: bool = False,
               remote_params: dict | None = None, connection: type[SimConnection] = SimConnection,
               **conn_kw) -> SimAgent:
    """`connection`: SimConnection or a test's subclass of it."""
    conn = connection(is_client=True, version=version, now=now, peer_addr=ADDR_S, **conn_kw)
    if remote_params is not None:
        conn.set_transport_param(remote_params, remote=True)
    cfg = TlsConfig(alpn_protocols=[ALPN], server_name="localhost", trust=trust(),
                    transport_parameters=conn.local_transport_params_blob(), session=session,
                    enable_early_data=early_data)
    return SimAgent(conn, ClientEngine(cfg))


class SimServer(SimAgent):
    """A server agent whose connection is made from the first client Initial, as a
    listener's accept() does (parse_initial_header, then ClientHello processing)."""

    def __init__(self, *, config: dict | None = None, early_data: bool = False,
                 local_params: dict | None = None) -> None:
        super().__init__(None, None)
        self.config = config
        self.early_data = early_data
        self.local_params = local_params
        self.echo = True

    def recv(self, data: bytes, now: float) -> None:
        if self.conn is None:
            header = parse_initial_header(data)
            if header is None:
                return
            version, dcid, scid, token = header
            self.conn = SimConnection(is_client=False, version=version, original_dcid=dcid, peer_cid=scid,
                                      token=token, now=now, config=self.config, peer_addr=ADDR_C,
                                      local_params=self.local_params,
                                      token_source=lambda: _TOKENS.issue(TokenKind.REGULAR, ADDR_C, b"", now))
            cfg = TlsConfig(alpn_protocols=[ALPN], credentials=credentials(), trust=trust(),
                            session_ticket_key=_TICKET_KEY, enable_early_data=self.early_data,
                            pause_at_client_hello=True)
            self.engine = ServerEngine(cfg)
        self.conn.receive_datagram(data, ADDR_C, now)


def packet_kinds(datagram: bytes) -> list[tuple[bool, int]]:
    """(is_long, first byte) of every packet in a datagram (coalescing check)."""
    out, pos = [], 0
    while pos < len(datagram):
        header = parse_header(datagram, pos, 8)
        out.append((header.is_long, datagram[pos]))
        pos = header.end
    return out


# ---- the wire ---------------------------------------------------------------------------------


Drop = Callable[[str, int, bytes], bool]


def _no_idle(now: float) -> None:
    """A peer without idle work (aioquic)."""


@dataclass
class Wire:
    """Two peers, a clock, and an optional loss pattern: drop(direction, index, datagram)
    where direction is "c2s" or "s2c" and index counts that direction's datagrams."""

    client: object
    server: object
    now: float = START
    drop: Drop | None = None
    latency: float = 0.01
    sent: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    dropped: list[tuple[str, int]] = field(default_factory=list)
    log: list[tuple[str, int]] = field(default_factory=list)
    idle_work: bool = True  # False: only timers do the idle work (a peer that never waits)

    def step(self) -> bool:
        moved = False
        for name, src, dst in (("c2s", self.client, self.server), ("s2c", self.server, self.client)):
            batch = src.send(self.now)
            if self.idle_work:  # its datagrams are out: idle time, and what that queued
                getattr(src, "idle", _no_idle)(self.now)
                batch += src.send(self.now)
            if not batch:
                continue
            moved = True
            arrive = self.now + self.latency
            for data in batch:
                index = self.sent[name]
                self.sent[name] += 1
                self.log.append((name, len(data)))
                if self.drop is not None and self.drop(name, index, data):
                    self.dropped.append((name, index))
                    continue
                dst.recv(data, arrive)
            self.now = arrive
            dst.pump(self.now)
        return moved

    def run(self, until: Callable[[], bool], max_time: float = 60.0, max_steps: int = 5000) -> None:
        deadline = self.now + max_time
        for _ in range(max_steps):
            if until():
                return
            if self.step():
                continue
            timers = [t for t in (self.client.timer(), self.server.timer()) if t is not None]
            if not timers:
                raise AssertionError("both peers are idle and the condition is not met")
            self.now = max(self.now, min(timers))
            if self.now > deadline:
                raise AssertionError(f"condition not met within {max_time} s of simulated time")
            for peer in (self.client, self.server):
                t = peer.timer()
                if t is not None and t <= self.now:
                    peer.on_timer(self.now)
                    peer.pump(self.now)
        raise AssertionError("too many steps")


def handshake(client: SimAgent, server, *, drop: Drop | None = None, max_time: float = 60.0) -> Wire:
    wire = Wire(client, server, drop=drop)
    client.start(wire.now)
    wire.run(lambda: client.completed and getattr(server, "established", lambda: False)(), max_time)
    return wire


def established(agent: SimAgent) -> bool:
    return agent.conn is not None and agent.conn.state == ConnState.ESTABLISHED


SimServer.established = lambda self: established(self)  # type: ignore[attr-defined]


# ---- aioquic as the peer --------------------------------------------------------------------


class AioPeer:
    """aioquic's QuicConnection on the wire: echoes streams (server) or collects them."""

    def __init__(self, *, is_client: bool, version: int = V1, supported: list[int] | None = None) -> None:
        from aioquic.quic.configuration import QuicConfiguration

        self.is_client = is_client
        cfg = QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN.decode()],
                                supported_versions=supported or [V1, V2])
        if is_client:
            cfg.server_name = "localhost"
            cfg.cadata = ca_pem()
            cfg.original_version = version
        else:
            cert, key = leaf("p256")
            cfg.certificate, cfg.private_key = cert, key
        self.cfg = cfg
        self.quic = None
        self.handshake_done = False
        self.terminated = None
        self.received: dict[int, bytearray] = {}
        self.finished: set[int] = set()
        if is_client:
            from aioquic.quic.connection import QuicConnection

            self.quic = QuicConnection(configuration=cfg)

    def connect(self, now: float) -> None:
        self.quic.connect(ADDR_S, now)

    def send(self, now: float) -> list[bytes]:
        return [] if self.quic is None else [d for d, _ in self.quic.datagrams_to_send(now)]

    def recv(self, data: bytes, now: float) -> None:
        if self.quic is None:
            from aioquic.quic.connection import QuicConnection

            header = parse_initial_header(data)
            if header is None:
                return
            self.quic = QuicConnection(configuration=self.cfg, original_destination_connection_id=header[1])
        self.quic.receive_datagram(data, ADDR_S if self.is_client else ADDR_C, now)

    def timer(self) -> float | None:
        return None if self.quic is None else self.quic.get_timer()

    def on_timer(self, now: float) -> None:
        if self.quic is not None:
            self.quic.handle_timer(now)

    def pump(self, now: float) -> None:
        from aioquic.quic import events

        if self.quic is None:
            return
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, events.HandshakeCompleted):
                self.handshake_done = True
            elif isinstance(event, events.ConnectionTerminated):
                self.terminated = event
            elif isinstance(event, events.StreamDataReceived):
                self.received.setdefault(event.stream_id, bytearray()).extend(event.data)
                if event.end_stream:
                    self.finished.add(event.stream_id)
                    if not self.is_client:
                        self.quic.send_stream_data(event.stream_id, bytes(self.received[event.stream_id]),
                                                   end_stream=True)

    def established(self) -> bool:
        return self.handshake_done
