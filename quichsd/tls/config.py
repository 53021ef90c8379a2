"""Configuration of one side of a handshake. Built once, shared by many connections."""
from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..filecache import ParsedFiles
from .certs import TrustStore, load_certificates, load_private_key
from .constants import CipherSuite, NamedGroup, PskKeyExchangeMode, SignatureScheme
from .groups import KeySource
from .messages import Certificate, CertificateEntry, ClientHello
from .session import SessionData, SingleUseTickets, TicketSealer
from .signatures import schemes_for_private_key

DEFAULT_SUITES = (
    CipherSuite.AES_128_GCM_SHA256,
    CipherSuite.AES_256_GCM_SHA384,
    CipherSuite.CHACHA20_POLY1305_SHA256,
)
DEFAULT_GROUPS = (
    NamedGroup.X25519,
    NamedGroup.SECP256R1,
    NamedGroup.SECP384R1,
    NamedGroup.X25519MLKEM768,
)
# RFC 8446 §4.2.9, in preference order: with psk_dhe_ke a PSK handshake still does (EC)DHE;
# psk_ke is what tlshd's QUIC path offers and accepts (its GnuTLS priority has +PSK only).
DEFAULT_PSK_MODES = (PskKeyExchangeMode.PSK_DHE_KE, PskKeyExchangeMode.PSK_KE)
DEFAULT_SIGNATURE_SCHEMES = (
    SignatureScheme.ECDSA_SECP256R1_SHA256,
    SignatureScheme.RSA_PSS_RSAE_SHA256,
    SignatureScheme.ED25519,
    SignatureScheme.ECDSA_SECP384R1_SHA384,
    SignatureScheme.RSA_PSS_RSAE_SHA384,
    SignatureScheme.RSA_PSS_RSAE_SHA512,
)


class ClientAuth(enum.IntEnum):
    """quic_config.certificate_request: 0 ignore, 1 request, 2 require."""

    NONE = 0
    OPTIONAL = 1
    REQUIRED = 2


@dataclass
class Credentials:
    """A certificate chain (leaf first) and the leaf's private key."""

    chain: list[x509.Certificate]
    private_key: Any = field(repr=False)

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValueError("a certificate chain needs at least the leaf")
        self.chain_der = [c.public_bytes(Encoding.DER) for c in self.chain]
        # RFC 8446 §4.4.2 with an empty context: the same bytes for every handshake.
        self.certificate_message = Certificate(b"", [CertificateEntry(d) for d in self.chain_der]).encode()
        # What the key can sign with, in our preference order (RFC 8446 §4.2.3).
        self.signature_schemes: tuple[SignatureScheme, ...] = tuple(schemes_for_private_key(self.private_key))

    @classmethod
    def from_files(cls, cert_file: str | Path, key_file: str | Path) -> Credentials:
        """Loaded once per version of the two files, not once per handshake."""
        return _CREDENTIAL_FILES(cert_file, key_file)


def _credentials_from_files(cert_file: str | Path, key_file: str | Path) -> Credentials:
    return Credentials(load_certificates(cert_file), load_private_key(key_file))


_CREDENTIAL_FILES = ParsedFiles(_credentials_from_files, maxsize=32)


@lru_cache(maxsize=16)
def _per_ticket_key(ticket_key: bytes) -> tuple[TicketSealer, SingleUseTickets]:
    """What belongs to a ticket key rather than to one configuration: a server socket's
    key is the listener's, and a caller (the socket driver) may build a configuration per
    connection. So they share one sealer (no KDF per handshake) and one anti-replay record
    (RFC 8446 §8.1: a ticket's 0-RTT is accepted once, whichever configuration sees it;
    only this key opens its tickets)."""
    return TicketSealer(ticket_key), SingleUseTickets()


@dataclass(frozen=True)
class ExternalPsk:
    """An external PSK as tlshd's psk mode uses it (RFC 8446 §4.2.11; SHA-256 by default)."""

    identity: bytes
    key: bytes = field(repr=False)
    hash_name: str = "sha256"


@dataclass(frozen=True)
class ClientHelloInfo:
    """What a server's driver sees of the ClientHello before the server answers (the
    ClientHelloReceived event, with TlsConfig.pause_at_client_hello)."""

    server_name: str | None
    alpn_protocols: tuple[bytes, ...]
    transport_parameters: bytes
    # External PSK identities offered (pre_shared_key), in the client's order.
    psk_identities: tuple[bytes, ...] = ()


@dataclass
class ServerChoice:
    """The driver's answer to ClientHelloReceived (ServerEngine.choose); None fields keep
    the configuration's value."""

    credentials: Credentials | None = None
    trust: TrustStore | None = None
    alpn_protocols: Sequence[bytes] | None = None
    transport_parameters: bytes | None = None
    # Server: external PSKs to accept for this connection (e.g. looked up by identity).
    psks: Sequence[ExternalPsk] | None = None


def _alpn_bytes(protocol: bytes | str) -> bytes:
    """An ALPN protocol id as bytes; callers may give text ("h3")."""
    return protocol.encode() if isinstance(protocol, str) else bytes(protocol)


@dataclass
class TlsConfig:
    """Shared settings. `alpn_protocols` is mandatory for QUIC (RFC 9001 §8.1)."""

    alpn_protocols: Sequence[bytes]
    transport_parameters: bytes = b""
    # Client: SNI and the name the server certificate must match (DNS name or IP).
    server_name: str | None = None
    cipher_suites: Sequence[CipherSuite] = DEFAULT_SUITES
    # The client sends a key share for the first group only and relies on HRR otherwise.
    groups: Sequence[NamedGroup] = DEFAULT_GROUPS
    signature_schemes: Sequence[SignatureScheme] = DEFAULT_SIGNATURE_SCHEMES
    # Server: its certificate. Client: the certificate offered when the server asks.
    credentials: Credentials | None = None
    # Trust anchors for verifying the peer; None means the system bundle.
    trust: TrustStore | None = None
    # Client: verify the server (on unless explicitly turned off). Server: verify client certs.
    verify_peer: bool = True
    client_auth: ClientAuth = ClientAuth.NONE
    # Client: offers the first. Server: accepts any of them.
    psks: Sequence[ExternalPsk] = ()
    # PSK key exchange modes (RFC 8446 §4.2.9), for external PSKs and resumption alike. A
    # client offers these (psk_dhe_ke first); a server takes psk_dhe_ke whenever the client
    # offers it and psk_ke only when it is all the client offers and it is listed here;
    # without a mode in common it makes a full handshake (or fails if it has no certificate)
    # and issues no tickets. The order given does not matter. psk_ke has no forward
    # secrecy: the traffic keys come from the PSK alone, so whoever learns the PSK (or the
    # ticket key, for resumption) can decrypt every recorded connection made with it. It
    # is on by default because tlshd's QUIC path knows nothing else; (PSK_DHE_KE,) refuses it.
    psk_modes: Sequence[PskKeyExchangeMode] = DEFAULT_PSK_MODES
    # Client: resume this session (and send 0-RTT if enable_early_data and it allows).
    session: SessionData | None = None
    enable_early_data: bool = False
    # Server: the 64-byte key tickets are sealed under; tickets are issued only with one.
    session_ticket_key: bytes | None = None
    send_session_ticket: bool = True
    ticket_lifetime: int = 24 * 3600
    # Default: the record shared by every configuration with this session_ticket_key.
    replay_guard: SingleUseTickets | None = None
    # Emit KeyLogLine events (NSS key log lines, for Wireshark) for the driver to write.
    keylog: bool = False
    # Where ephemeral (EC)DH keys come from: the driver passes its EphemeralKeyPool
    # (tls/groups.py), which it refills while it waits for the peer. None: made when needed.
    ephemeral_keys: KeySource | None = None
    # Server: receive() stops after a valid first ClientHello: its events end with
    # ClientHelloReceived, the driver does what it must (spec §2.4 server step 3: the
    # client's transport parameters in, ours out; credentials, ALPN, PSKs by SNI/ALPN),
    # then ServerEngine.choose(ServerChoice) continues. The client's transport parameters
    # then come only in that event (no PeerTransportParameters).
    pause_at_client_hello: bool = False
    # Server, (EC)DHE: the ClientHello's events end with the ServerHello, and
    # ServerEngine.continue_flight() gives the rest of the flight (the shared secret, the
    # handshake keys, EncryptedExtensions..Finished). A caller that sends the ServerHello
    # in between lets the client work on it while the server computes the rest. Off: one
    # step, as before.
    server_hello_first: bool = False
    # Client: rewrites the ClientHello before it is encoded and enters the transcript
    # (`quichsd spec`'s seam, sock/sim/rewrite.py; not applied to a hello offering a PSK).
    client_hello_rewrite: Callable[[ClientHello], ClientHello] | None = None
    # False: TLS 1.3 over TCP (RFC 8446 alone; quichsd/tcp/): no quic_transport_parameters
    # either way, ALPN optional (none configured: none sent, a client's offer ignored), and
    # a server echoes the client's legacy_session_id (middlebox compatibility, §D.4).
    quic: bool = True

    def __post_init__(self) -> None:
        self.alpn_protocols = [_alpn_bytes(p) for p in self.alpn_protocols]
        if (self.quic and not self.alpn_protocols) or any(not 0 < len(p) < 256 for p in self.alpn_protocols):
            raise ValueError("QUIC needs at least one ALPN protocol of 1..255 bytes (RFC 9001 §8.1)")
        modes = {PskKeyExchangeMode(m) for m in self.psk_modes}
        if not modes:
            raise ValueError("psk_modes needs psk_dhe_ke, psk_ke or both")
        self.psk_modes = tuple(sorted(modes, reverse=True))  # psk_dhe_ke (1) first
        self._sealer: TicketSealer | None = None
        if self.session_ticket_key:
            self._sealer, shared_guard = _per_ticket_key(bytes(self.session_ticket_key))
            if self.replay_guard is None:
                self.replay_guard = shared_guard
        elif self.replay_guard is None:
            self.replay_guard = SingleUseTickets()  # no key, no tickets: never consulted
        self._trust: TrustStore | None = self.trust
        # Encodings of our own message parts that depend on this configuration only, found
        # on first use by the engines (in caches keyed by the values they depend on, so a
        # configuration rebuilt per handshake from the same settings does not re-encode).
        self.encodings: dict[Any, Any] = {}

    @property
    def ticket_sealer(self) -> TicketSealer | None:
        return self._sealer

    def trust_store(self) -> TrustStore:
        if self._trust is None:
            self._trust = TrustStore.system()
        return self._trust

    def check_client(self) -> None:
        if self.verify_peer and not self.psks and not self.server_name:
            raise ValueError("verifying the server needs server_name (a host name or IP address)")

    def check_server(self) -> None:
        if self.credentials is None and not self.psks and not self.pause_at_client_hello:
            raise ValueError("a server needs a certificate or PSKs")
