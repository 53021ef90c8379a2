"""Reproducible in-memory handshakes of our client and server engines, for the tls_engine
target and for its seeds.

Every handshake here is the same bytes in every process: fixed ed25519 leaf certificates
(fixed serials and dates, a P-256 CA signing per RFC 6979), a fixed clock, and, while one runs,
the engines' randomness (randoms, ephemeral keys, ticket nonces, the HelloRetryRequest
cookie key) drawn from a stream seeded by the scenario. So a message recorded by
fuzz/make_seeds.py is, byte for byte, what the live peer would have sent in the fuzzing
process: a mutated seed is judged in its real context (transcript, keys, state) and the
fuzzer reaches past the signature and Finished checks that random bytes never pass.

The randomness is swapped in the engine modules only, for the duration of `deterministic`,
and put back after; nothing here changes how the product behaves.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from quichsd.tls import client as client_mod
from quichsd.tls import server as server_mod
from quichsd.tls import session as session_mod
from quichsd.tls.certs import TrustStore
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import ClientAuth, Credentials, ExternalPsk, TlsConfig
from quichsd.tls.constants import CryptoLevel, NamedGroup
from quichsd.tls.engine import TlsEngine
from quichsd.tls.events import HandshakeComplete, SendHandshake, SessionTicketReceived
from quichsd.tls.groups import KeyPair, ec_public_bytes
from quichsd.tls.server import ServerEngine
from quichsd.tls.session import SingleUseTickets

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
T = NOW.timestamp()
CLIENT_TP = b"\x0f\x08clientid\x04\x04\x80\x10\x00\x00"
SERVER_TP = b"\x0f\x08serverid\x00\x08odcid123\x01\x02\x40\x64"
TICKET_KEY = bytes(range(64))
PSK = ExternalPsk(b"nvme-host-1", bytes(range(32)))
MODES = ("full", "hrr", "resumption", "client_auth", "psk", "unverified", "split_flight")


# -- randomness ------------------------------------------------------------------------------


class _Stream:
    """SHA-256 in counter mode over a seed: the bytes the engines get instead of urandom."""

    def __init__(self, seed: bytes) -> None:
        self.seed, self.counter = seed, 0

    def bytes(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.seed + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return out[:n]


class _Os:
    """Stands in for the `os` module inside the engine modules: urandom from the stream."""

    def __init__(self, real: Any, stream: _Stream) -> None:
        self._real, self.urandom = real, stream.bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


_CURVES = {NamedGroup.SECP256R1: ec.SECP256R1(), NamedGroup.SECP384R1: ec.SECP384R1()}
_ORDERS = {
    NamedGroup.SECP256R1: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    NamedGroup.SECP384R1: int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
                              "581A0DB248B0A77AECEC196ACCC52973", 16),
}


def _makers(stream: _Stream) -> dict[NamedGroup, Callable[[], KeyPair]]:
    def x25519_pair() -> KeyPair:
        private = x25519.X25519PrivateKey.from_private_bytes(stream.bytes(32))
        return private, private.public_key().public_bytes_raw()

    def ec_pair(group: NamedGroup) -> Callable[[], KeyPair]:
        def make() -> KeyPair:
            scalar = 1 + int.from_bytes(stream.bytes(56), "big") % (_ORDERS[group] - 1)
            private = ec.derive_private_key(scalar, _CURVES[group])
            return private, ec_public_bytes(private)

        return make

    return {NamedGroup.X25519: x25519_pair, NamedGroup.SECP256R1: ec_pair(NamedGroup.SECP256R1),
            NamedGroup.SECP384R1: ec_pair(NamedGroup.SECP384R1)}


class _StreamKeys:
    """The engines' KeySource here (TlsConfig.ephemeral_keys of every configuration below):
    key pairs drawn from the stream of the `deterministic` block that is running."""

    def __init__(self) -> None:
        self.makers: dict[NamedGroup, Callable[[], KeyPair]] | None = None

    def take(self, group: NamedGroup) -> KeyPair:
        if self.makers is None:
            raise RuntimeError("fuzz handshakes take their keys inside deterministic() only")
        return self.makers[group]()


KEYS = _StreamKeys()


@contextlib.contextmanager
def deterministic(seed: bytes) -> Iterator[None]:
    stream = _Stream(seed)
    modules = (client_mod, server_mod, session_mod)
    saved_os = [m.os for m in modules]
    saved_makers = KEYS.makers
    saved_cookie = server_mod._COOKIE_KEY
    try:
        for m in modules:
            m.os = _Os(m.os, stream)  # type: ignore[assignment]
        KEYS.makers = _makers(stream)
        server_mod._COOKIE_KEY = hashlib.sha256(b"cookie" + seed).digest()
        yield
    finally:
        for m, real in zip(modules, saved_os, strict=True):
            m.os = real  # type: ignore[assignment]
        KEYS.makers = saved_makers
        server_mod._COOKIE_KEY = saved_cookie


# -- certificates ----------------------------------------------------------------------------


def _key(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def _ca_key() -> ec.EllipticCurvePrivateKey:
    # cryptography's verifier takes no ed25519 CA; P-256 with RFC 6979 signatures instead.
    scalar = int.from_bytes(hashlib.sha256(b"fuzz CA").digest(), "big") >> 8
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn: str, key: Any, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          serial: int, *, ca: bool) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2035, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
        b = b.add_extension(usage, critical=True)
    else:
        b = (b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                             critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
             .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False))
    return b.sign(issuer_key, hashes.SHA256(), ecdsa_deterministic=True)


@functools.cache
def pki() -> tuple[TrustStore, Credentials, Credentials]:
    """(trust store of the CA, server credentials, client credentials)."""
    ca_key = _ca_key()
    ca = _cert("quichsd fuzz CA", ca_key, "quichsd fuzz CA", ca_key, 1, ca=True)
    server_key, client_key = _key("fuzz server"), _key("fuzz client")
    server = _cert("localhost", server_key, "quichsd fuzz CA", ca_key, 2, ca=False)
    client = _cert("client", client_key, "quichsd fuzz CA", ca_key, 3, ca=False)
    return (TrustStore.from_certificates([ca]), Credentials([server], server_key),
            Credentials([client], client_key))


# -- configurations --------------------------------------------------------------------------


def _client(**kw: Any) -> TlsConfig:
    trust, _, _ = pki()
    base: dict[str, Any] = dict(alpn_protocols=[b"h3"], server_name="localhost", trust=trust,
                                transport_parameters=CLIENT_TP, groups=[NamedGroup.X25519],
                                ephemeral_keys=KEYS)
    base.update(kw)
    return TlsConfig(**base)


def _server(**kw: Any) -> TlsConfig:
    _, creds, _ = pki()
    base: dict[str, Any] = dict(alpn_protocols=[b"h3"], credentials=creds, transport_parameters=SERVER_TP,
                                groups=[NamedGroup.X25519], session_ticket_key=TICKET_KEY,
                                enable_early_data=True, replay_guard=SingleUseTickets(), ephemeral_keys=KEYS)
    base.update(kw)
    return TlsConfig(**base)


@functools.lru_cache(maxsize=1)
def _session() -> Any:
    """A resumable session from one full handshake (itself deterministic)."""
    first = Conversation("full").run()
    tickets = [e for e in first.events["client"] if isinstance(e, SessionTicketReceived)]
    assert tickets, "the full handshake issued no ticket"
    return tickets[0].session


def configs(mode: str) -> tuple[TlsConfig, TlsConfig]:
    """(client config, server config) of `mode`; fresh objects, fresh replay guard."""
    if mode == "full":
        return _client(), _server()
    if mode == "hrr":
        return (_client(groups=[NamedGroup.X25519, NamedGroup.SECP256R1]),
                _server(groups=[NamedGroup.SECP256R1]))
    if mode == "resumption":
        return _client(session=_session(), enable_early_data=True), _server()
    if mode == "client_auth":
        trust, _, client_creds = pki()
        return _client(credentials=client_creds), _server(client_auth=ClientAuth.REQUIRED, trust=trust)
    if mode == "psk":
        common: dict[str, Any] = dict(alpn_protocols=[b"h3"], psks=[PSK], groups=[NamedGroup.X25519],
                                      ephemeral_keys=KEYS)
        return (TlsConfig(**common, transport_parameters=CLIENT_TP),
                TlsConfig(**common, transport_parameters=SERVER_TP))
    if mode == "unverified":
        return _client(verify_peer=False), _server()
    if mode == "split_flight":  # the ServerHello alone, then continue_flight() (kernel sockets)
        return _client(), _server(server_hello_first=True)
    raise ValueError(mode)


# -- one conversation ------------------------------------------------------------------------

Delivery = tuple[CryptoLevel, bytes]
# hook(index, sender, level, data) -> the deliveries that replace it, or None to keep it.
Hook = Callable[[int, str, CryptoLevel, bytes], "list[Delivery] | None"]


@dataclass
class Conversation:
    """One client and one server engine of `mode`, wired in memory. `run(hook)` passes every
    SendHandshake to the other side, in order, through `hook`."""

    mode: str
    client: ClientEngine = field(init=False)
    server: ServerEngine = field(init=False)
    sent: list[tuple[str, CryptoLevel, bytes]] = field(default_factory=list)
    events: dict[str, list[Any]] = field(default_factory=lambda: {"client": [], "server": []})
    receiver: str | None = None  # the side whose receive() ran last

    def __post_init__(self) -> None:
        client_cfg, server_cfg = configs(self.mode)
        self.client, self.server = ClientEngine(client_cfg), ServerEngine(server_cfg)

    def engine(self, side: str) -> TlsEngine:
        return self.client if side == "client" else self.server

    def run(self, hook: Hook | None = None) -> Conversation:
        with deterministic(self.mode.encode()):
            queue = [("client", e) for e in self.client.start(T)]
            while queue:
                sender, event = queue.pop(0)
                self.events[sender].append(event)
                if not isinstance(event, SendHandshake):
                    continue
                index = len(self.sent)
                self.sent.append((sender, event.level, event.data))
                deliveries = hook(index, sender, event.level, event.data) if hook else None
                target = "server" if sender == "client" else "client"
                for level, data in deliveries if deliveries is not None else [(event.level, event.data)]:
                    self.receiver = target
                    engine = self.engine(target)
                    queue.extend((target, e) for e in engine.receive(level, data, T))
                    if engine.flight_pending:  # as quichsd/handshake.py does, once the ServerHello is out
                        queue.extend((target, e) for e in engine.continue_flight(T))
            self.receiver = None
        return self

    def completed(self) -> bool:
        return all(any(isinstance(e, HandshakeComplete) for e in self.events[side])
                   for side in ("client", "server"))


@functools.cache
def recorded(mode: str) -> tuple[tuple[str, CryptoLevel, bytes], ...]:
    """Every SendHandshake of the unaltered conversation of `mode`, in delivery order."""
    conv = Conversation(mode).run()
    assert conv.completed(), f"the {mode} handshake did not complete"
    return tuple(conv.sent)
