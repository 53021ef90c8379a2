"""Events the engine returns: small frozen dataclasses; secrets never appear in a repr."""
from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509

from .config import ClientHelloInfo
from .constants import CryptoLevel, Direction
from .session import SessionData


@dataclass(frozen=True, slots=True)
class SendHandshake:
    """Handshake bytes to write to the CRYPTO stream of `level` (sendmsg with that cmsg)."""

    level: CryptoLevel
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class InstallSecret:
    """A traffic secret for the kernel: struct quic_crypto_secret {send, level, type, secret}."""

    level: CryptoLevel
    direction: Direction
    cipher_type: int
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PeerTransportParameters:
    """The peer's quic_transport_parameters (0x39) body, for TRANSPORT_PARAM_EXT."""

    data: bytes


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The handshake is done (both Finished checked): what was negotiated, and who the peer is."""

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
