"""Drive our TLS engine against aioquic's TLS layer (aioquic.tls.Context), in memory.

Only aioquic's public API is used: Context, its callbacks, Buffer, SessionTicket and
verify_certificate. aioquic numbers epochs INITIAL=0, ZERO_RTT=1, HANDSHAKE=2, ONE_RTT=3;
our engine uses the kernel's levels APP=0, INITIAL=1, HANDSHAKE=2, EARLY=3, and
SEND=1/RECV=0 where aioquic has ENCRYPT=1/DECRYPT=0. Secrets from both sides are
collected as {(level, direction): secret} in our numbering so they compare directly.

aioquic reads the wall clock (aioquic.tls.utcnow) for certificate validity and ticket
ages; `Clock` pins it, together with the `now` handed to our engine, to one instant.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from functools import cache

from aioquic import tls as aiotls
from aioquic.buffer import Buffer
from cryptography.hazmat.primitives.serialization import Encoding

from quichsd.tls.certs import TrustStore
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import Credentials, TlsConfig
from quichsd.tls.constants import CryptoLevel, Direction
from quichsd.tls.events import SendHandshake
from quichsd.tls.server import ServerEngine
from tests.pki import NOW, Ca, new_key, test_ca
from tests.tls_pair import Side

EPOCH_TO_LEVEL = {
    aiotls.Epoch.INITIAL: CryptoLevel.INITIAL,
    aiotls.Epoch.ZERO_RTT: CryptoLevel.EARLY,
    aiotls.Epoch.HANDSHAKE: CryptoLevel.HANDSHAKE,
    aiotls.Epoch.ONE_RTT: CryptoLevel.APP,
}
# Order in which one handle_message call's output is put on the wire.
_OUTPUT_EPOCHS = (aiotls.Epoch.INITIAL, aiotls.Epoch.ZERO_RTT, aiotls.Epoch.HANDSHAKE, aiotls.Epoch.ONE_RTT)

ALPN = "h3"
CLIENT_PARAMS = bytes.fromhex("0104800075300304400005dc0e0104") + b"\x0f\x08client-1"
SERVER_PARAMS = bytes.fromhex("0104800075300304400005dc0e0104") + b"\x0f\x08server-1"


class Clock:
    """One clock for both implementations: `now` for our engine, utcnow for aioquic."""

    def __init__(self, start: datetime.datetime = NOW) -> None:
        self.now = start.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def utcnow(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.now, datetime.UTC)


# -- certificates -----------------------------------------------------------------------


def interop_leaf(kind: str, cn: str = "localhost"):
    """A leaf of the test CA (one per kind and name). Valid for ten years: aioquic's chain
    check goes through OpenSSL, which uses the real clock whatever utcnow says."""
    return _leaf(kind, cn)


@cache
def _leaf(kind: str, cn: str):
    key = new_key(kind)
    return test_ca().issue(cn, key, days=(-30, 3650)), key


@cache
def intermediate_ca() -> Ca:
    key = new_key("p256")
    cert = test_ca().issue("quichsd test intermediate", key, names=(), ips=(), days=(-30, 3650), ca=True)
    return Ca(key, cert)


@cache
def chained_leaf(kind: str = "p256", cn: str = "localhost"):
    """A leaf issued by the intermediate: (leaf, intermediate, key)."""
    key = new_key(kind)
    inter = intermediate_ca()
    return inter.issue(cn, key, days=(-30, 3650)), inter.cert, key


def credentials(kind: str, cn: str = "localhost") -> Credentials:
    cert, key = interop_leaf(kind, cn)
    return Credentials([cert], key)


def ca_pem() -> bytes:
    return test_ca().cert.public_bytes(Encoding.PEM)


def trust() -> TrustStore:
    return TrustStore.from_certificates([test_ca().cert])


# -- configurations -----------------------------------------------------------------------


def our_client_config(**kw) -> TlsConfig:
    kw.setdefault("alpn_protocols", [ALPN.encode()])
    kw.setdefault("transport_parameters", CLIENT_PARAMS)
    kw.setdefault("server_name", "localhost")
    kw.setdefault("trust", trust())
    return TlsConfig(**kw)


def our_server_config(kind: str = "p256", **kw) -> TlsConfig:
    kw.setdefault("alpn_protocols", [ALPN.encode()])
    kw.setdefault("transport_parameters", SERVER_PARAMS)
    kw.setdefault("credentials", credentials(kind))
    kw.setdefault("trust", trust())
    return TlsConfig(**kw)


def aio_client(*, cipher_suites=None, cert_kind: str | None = None, session_ticket=None,
               want_tickets: bool = True, **kw) -> aiotls.Context:
    ctx = aiotls.Context(
        is_client=True,
        alpn_protocols=kw.pop("alpn_protocols", [ALPN]),
        cadata=kw.pop("cadata", ca_pem()),
        cipher_suites=cipher_suites,
        server_name=kw.pop("server_name", "localhost"),
        **kw,
    )
    ctx.handshake_extensions = [(aiotls.ExtensionType.QUIC_TRANSPORT_PARAMETERS, CLIENT_PARAMS)]
    if cert_kind is not None:
        cert, key = interop_leaf(cert_kind, "aioquic client")
        ctx.certificate, ctx.certificate_private_key = cert, key
    ctx.session_ticket = session_ticket
    if want_tickets:
        # aioquic only offers psk_key_exchange_modes (and so gets tickets) with a callback.
        ctx.new_session_ticket_cb = lambda ticket: None
    return ctx


class TicketStore:
    """aioquic server-side ticket store (what its examples keep in a dict)."""

    def __init__(self) -> None:
        self.tickets: dict[bytes, aiotls.SessionTicket] = {}

    def add(self, ticket: aiotls.SessionTicket) -> None:
        self.tickets[ticket.ticket] = ticket

    def get(self, label: bytes) -> aiotls.SessionTicket | None:
        return self.tickets.get(label)


def aio_server(kind: str = "p256", *, cipher_suites=None, store: TicketStore | None = None,
               max_early_data: int | None = None, request_client_certificate: bool = False,
               **kw) -> aiotls.Context:
    ctx = aiotls.Context(
        is_client=False,
        alpn_protocols=kw.pop("alpn_protocols", [ALPN]),
        cipher_suites=cipher_suites,
        max_early_data=max_early_data,
        **kw,
    )
    ctx.certificate, ctx.certificate_private_key = interop_leaf(kind)
    ctx.handshake_extensions = [(aiotls.ExtensionType.QUIC_TRANSPORT_PARAMETERS, SERVER_PARAMS)]
    if store is not None:
        ctx.new_session_ticket_cb = store.add
        ctx.get_session_ticket_cb = store.get
    if request_client_certificate:
        # aioquic has no public switch for CertificateRequest; this attribute is the one
        # its own test-suite flips ("For test purposes only").
        ctx._request_client_certificate = True
    return ctx


# -- the aioquic side ---------------------------------------------------------------------


@dataclass
class AioSide:
    ctx: aiotls.Context
    # (level, direction, aioquic cipher suite, secret), in our numbering
    installs: list = field(default_factory=list)
    tickets: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ctx.update_traffic_key_cb = self._on_key
        previous = self.ctx.new_session_ticket_cb
        if previous is not None:
            def on_ticket(ticket, previous=previous):
                self.tickets.append(ticket)
                previous(ticket)
            self.ctx.new_session_ticket_cb = on_ticket

    def _on_key(self, direction, epoch, cipher_suite, secret) -> None:
        self.installs.append(
            (EPOCH_TO_LEVEL[epoch], Direction(direction.value), int(cipher_suite), bytes(secret))
        )

    def secrets(self) -> dict:
        out = {}
        for level, direction, _, secret in self.installs:
            key = (int(level), int(direction))
            assert key not in out, f"aioquic installed {key} twice"
            out[key] = secret
        return out

    def suites(self) -> set[int]:
        return {suite for _, _, suite, _ in self.installs}

    def handle(self, data: bytes) -> list[tuple[CryptoLevel, bytes]]:
        bufs = {epoch: Buffer(capacity=1 << 16) for epoch in aiotls.Epoch}
        self.ctx.handle_message(data, bufs)
        return [(EPOCH_TO_LEVEL[e], bufs[e].data) for e in _OUTPUT_EPOCHS if bufs[e].data]

    def received_extension(self, ext_type: int) -> bytes | None:
        for t, value in self.ctx.received_extensions or []:
            if t == ext_type:
                return value
        return None

    @property
    def peer_params(self) -> bytes | None:
        return self.received_extension(aiotls.ExtensionType.QUIC_TRANSPORT_PARAMETERS)

    @property
    def connected(self) -> bool:
        return self.ctx.state in (aiotls.State.CLIENT_POST_HANDSHAKE, aiotls.State.SERVER_POST_HANDSHAKE)


def _sends(events) -> list[tuple[CryptoLevel, bytes]]:
    return [(e.level, e.data) for e in events if isinstance(e, SendHandshake)]


def _pieces(data: bytes, chunk: int | None) -> list[bytes]:
    if not chunk:
        return [data]
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def _exchange(ours: Side, aio: AioSide, first: list, first_from_ours: bool, now: float,
              chunk: int | None) -> None:
    """Shuttle handshake bytes until both sides go quiet. Each hop keeps its level: our
    engine rejects data at the wrong level, aioquic's handle_message takes no level.
    With `chunk`, every hop is delivered in pieces of that many bytes (as CRYPTO frames
    may split messages anywhere)."""
    queue = [(first_from_ours, level, data) for level, data in first]
    while queue:
        from_ours, level, data = queue.pop(0)
        for piece in _pieces(data, chunk):
            if from_ours:
                queue.extend((False, lv, d) for lv, d in aio.handle(piece))
            else:
                out = ours.engine.receive(level, piece, now)
                ours.events.extend(out)
                queue.extend((True, lv, d) for lv, d in _sends(out))


def run_ours_vs_aioquic_server(client_cfg: TlsConfig, server_ctx: aiotls.Context, now: float,
                               *, chunk: int | None = None) -> tuple[Side, AioSide]:
    client = Side(ClientEngine(client_cfg))
    server = AioSide(server_ctx)
    start = client.engine.start(now)
    client.events.extend(start)
    _exchange(client, server, _sends(start), True, now, chunk)
    return client, server


def run_aioquic_client_vs_ours(client_ctx: aiotls.Context, server_cfg: TlsConfig, now: float,
                               *, chunk: int | None = None) -> tuple[AioSide, Side]:
    client = AioSide(client_ctx)
    server = Side(ServerEngine(server_cfg))
    hello = client.handle(b"")
    _exchange(server, client, hello, False, now, chunk)
    return client, server
