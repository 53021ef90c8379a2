"""Events the engine returns. Small frozen dataclasses; secrets never appear in a repr.

The events of every handshake (SendHandshake, InstallSecret, PeerTransportParameters,
HandshakeComplete) have a hand-written __init__ that stores through the slot descriptors:
the generated one of a frozen dataclass calls object.__setattr__ per field, which is about
twice the cost, and a handshake builds sixteen of them. Fields, order, equality, repr,
hashing and immutability are the dataclass's, unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509

from .config import ClientHelloInfo
from .constants import CryptoLevel, Direction
from .session import SessionData


@dataclass(frozen=True, slots=True, init=False)
class SendHandshake:
    """Handshake bytes to write to the CRYPTO stream of `level` (sendmsg with that cmsg)."""

    level: CryptoLevel
    data: bytes = field(repr=False)

    def __init__(self, level: CryptoLevel, data: bytes) -> None:
        _SEND_LEVEL(self, level)
        _SEND_DATA(self, data)


@dataclass(frozen=True, slots=True, init=False)
class InstallSecret:
    """A traffic secret for the kernel: struct quic_crypto_secret {send, level, type, secret}."""

    level: CryptoLevel
    direction: Direction
    cipher_type: int
    secret: bytes = field(repr=False)

    def __init__(self, level: CryptoLevel, direction: Direction, cipher_type: int, secret: bytes) -> None:
        _INSTALL_LEVEL(self, level)
        _INSTALL_DIRECTION(self, direction)
        _INSTALL_CIPHER(self, cipher_type)
        _INSTALL_SECRET(self, secret)


@dataclass(frozen=True, slots=True, init=False)
class PeerTransportParameters:
    """The peer's quic_transport_parameters (0x39) body, for TRANSPORT_PARAM_EXT."""

    data: bytes

    def __init__(self, data: bytes) -> None:
        _PEER_TP_DATA(self, data)


@dataclass(frozen=True, slots=True, init=False)
class HandshakeComplete:
    version: int
    cipher_suite: int
    group: int | None
    alpn: bytes | None
    signature_scheme: int | None
    peer_certificates: tuple[x509.Certificate, ...]
    psk_identity: bytes | None
    resumed: bool
    early_data_accepted: bool
    server_name: str | None

    def __init__(self, version: int, cipher_suite: int, group: int | None, alpn: bytes | None,
                 signature_scheme: int | None, peer_certificates: tuple[x509.Certificate, ...],
                 psk_identity: bytes | None, resumed: bool, early_data_accepted: bool,
                 server_name: str | None) -> None:
        s = _COMPLETE_SETTERS
        s[0](self, version)
        s[1](self, cipher_suite)
        s[2](self, group)
        s[3](self, alpn)
        s[4](self, signature_scheme)
        s[5](self, peer_certificates)
        s[6](self, psk_identity)
        s[7](self, resumed)
        s[8](self, early_data_accepted)
        s[9](self, server_name)


# The slot descriptors' setters (they bypass the frozen __setattr__, as object.__setattr__ does).
_SEND_LEVEL, _SEND_DATA = SendHandshake.level.__set__, SendHandshake.data.__set__  # type: ignore[attr-defined]
_INSTALL_LEVEL = InstallSecret.level.__set__  # type: ignore[attr-defined]
_INSTALL_DIRECTION = InstallSecret.direction.__set__  # type: ignore[attr-defined]
_INSTALL_CIPHER = InstallSecret.cipher_type.__set__  # type: ignore[attr-defined]
_INSTALL_SECRET = InstallSecret.secret.__set__  # type: ignore[attr-defined]
_PEER_TP_DATA = PeerTransportParameters.data.__set__  # type: ignore[attr-defined]
_COMPLETE_SETTERS = tuple(
    getattr(HandshakeComplete, name).__set__
    for name in ("version", "cipher_suite", "group", "alpn", "signature_scheme", "peer_certificates",
                 "psk_identity", "resumed", "early_data_accepted", "server_name")
)


@dataclass(frozen=True, slots=True)
class ClientHelloReceived:
    """Server, with TlsConfig.pause_at_client_hello: the last event of the receive() that
    took a valid first ClientHello. The engine waits for ServerEngine.choose()."""

    info: ClientHelloInfo


@dataclass(frozen=True, slots=True)
class KeyLogLine:
    """One line of the NSS key log (SSLKEYLOGFILE), when TlsConfig.keylog asks for them:
    the driver writes it (tls/keylog.py KeyLogFile); the engine does no I/O."""

    label: str
    client_random: bytes = field(repr=False)
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SessionTicketReceived:
    """Client: a NewSessionTicket turned into data that resumes a later connection."""

    session: SessionData

Event = (SendHandshake | InstallSecret | PeerTransportParameters | HandshakeComplete | SessionTicketReceived
         | KeyLogLine | ClientHelloReceived)
