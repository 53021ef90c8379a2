"""One TLS-over-TCP handshake request, run to its DONE status: the TLS 1.3 handshake on the
consumer's TCP socket, then kTLS (spec tlshd-behaviour §3.2, §3.3, §5, §6, §9.3).

request.handle() dispatches here for SO_PROTOCOL == IPPROTO_TCP, once the message type and
auth mode are known. TcpRequest.run() never raises for a failed handshake or setup step: it
returns the DoneResult (request.handle() turns anything unexpected into EIO).

    client unauth  no client certificate; the server's chain is verified against
                   [authenticate.client] x509.truststore (+ x509.crl) and its name against
                   PEERNAME, or the reverse-DNS name of the peer (§6.1). With neither name:
                   EIO (tlshd 1.4 passes the missing name to strlen() and its child dies
                   without a DONE, §9.5).
    client x509    as unauth, plus the client certificate from the CERT/PRIVKEY serials or
                   x509.certificate / x509.private_key; with neither: EIO. REMOTE_AUTH: one
                   "TLS x509 <peername>" asymmetric key per certificate of the server's
                   chain (§6.4).
    client psk     each PEER_IDENTITY in turn, the next only after EACCES (§6.1); none: EIO.
                   The key's length picks the suites as tlshd's priority caches do (§3.3):
                   32 bytes the SHA-256 suites, 48 the SHA-384 one, (EC)DHE required for
                   both; other lengths all suites, psk_ke allowed. An NVMe identity
                   ("NVMe<v><R|G><hh> ...") names the PSK's hash (01 SHA-256, 02 SHA-384,
                   other: EIO, §5); any other identity uses SHA-384 for a 48-byte key and
                   SHA-256 otherwise (DIFFERENCE: GnuTLS stays at SHA-256, so tlshd cannot
                   use a 48-byte non-NVMe key at all). REMOTE_AUTH: the PSK's own serial.
    server x509    certificate/key from the serials, else [authenticate.server]; missing, or
                   an unloadable trust store: a fatal access_denied alert and EIO (§6.2). A
                   client certificate is requested, not required, and verified without a
                   name check; REMOTE_AUTH 0xFFFFFFFF per certificate of a verified chain.
    server psk     the client's identities are looked up as "psk" keys from the session
                   keyring (keyctl_search, recursive), the first found is used and its serial
                   is REMOTE_AUTH. As tlshd's TCP server (and unlike our QUIC path) a "user"
                   key is NOT accepted: a keyring set up for tlshd works unchanged, and one
                   that only works with quichsd is not possible. None found: the engine
                   answers unknown_psk_identity and the status is EACCES (tlshd's GnuTLS
                   failure status).
    server unauth  EIO ("Unrecognized auth mode"), as tlshd.

Common to all: only TLS 1.3, the kTLS ciphers (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305;
not AES-128-CCM), no session tickets issued or used (tlshd's %NO_TICKETS: a ticket after
kTLS install makes the consumer's next recv fail with EIO on 6.12); the TIMEOUT attribute or
40 s (GnuTLS's default, which tlshd's TCP path uses); TCP_NODELAY forced on for the handshake
and restored; then kTLS (status 0), any failure of it EIO. Statuses of a failed handshake:
EACCES (an alert sent or received, a verification failure, the timeout, a socket error),
ETIMEDOUT (the peer closed the connection), EKEYREJECTED when the peer's alert is
unknown_psk_identity (tlshd HEAD; 1.4.0 says EACCES): nvme then revokes the stale PSK.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import re
import socket
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from ..tcp.handshake import ApplicationKeys, PeerAlert, TcpHandshakeError, TcpTlsHandshake
from ..tcp.ktls import KtlsError, forced_nodelay, install_ktls
from ..tcp.record import ContentType, alert_payload, plaintext_records
from ..tls.client import ClientEngine
from ..tls.config import ClientAuth, ClientHelloInfo, ExternalPsk, ServerChoice, TlsConfig
from ..tls.constants import AlertDescription, CipherSuite, PskKeyExchangeMode
from ..tls.events import HandshakeComplete
from ..tls.server import ServerEngine
from . import keyring as kr
from .config import DaemonConfig
from .keyring import AuthMode
from .request import (
    DoneResult,
    HandshakeRequest,
    MessageType,
    _file_credentials,
    _serial_credentials,
    _SetupError,
    _suite_name,
    _trust,
    cached_reverse_name,
    reverse_lookup,
)

__all__ = ["TCP_DEFAULT_TIMEOUT", "Installer", "TcpRequest", "psk_profile"]

log = logging.getLogger(__name__)

TCP_DEFAULT_TIMEOUT = 40.0  # seconds: GnuTLS's default handshake timeout (§3.3)
PskProfile = tuple[str, tuple[CipherSuite, ...], tuple[PskKeyExchangeMode, ...]]
Chooser = Callable[[ClientHelloInfo], ServerChoice | None]
# What puts the session into the kernel: install_ktls, or a test's recorder (the host has no kTLS).
Installer = Callable[[socket.socket, ApplicationKeys], object]

# The ciphers kTLS supports (§3.3), by the PSK hash they go with (tlshd's psk-sha256/384 caches).
_KTLS_SUITES = (CipherSuite.AES_128_GCM_SHA256, CipherSuite.AES_256_GCM_SHA384,
                CipherSuite.CHACHA20_POLY1305_SHA256)
_SUITES_BY_KEY_LENGTH = {
    32: (CipherSuite.AES_128_GCM_SHA256, CipherSuite.CHACHA20_POLY1305_SHA256),
    48: (CipherSuite.AES_256_GCM_SHA384,),
}
_DHE_ONLY = (PskKeyExchangeMode.PSK_DHE_KE,)
_ANY_MODE = (PskKeyExchangeMode.PSK_DHE_KE, PskKeyExchangeMode.PSK_KE)
# NVMe/TCP PSK identity (NVMe TCP transport spec 3.6.1.3): "NVMe<version><R|G><hmac> ...".
_NVME_IDENTITY = re.compile(r"NVMe[0-9][RG]([0-9]{2}) ")
_NVME_HASHES = {"01": "sha256", "02": "sha384"}


class _Failed(Exception):
    """The handshake or the kTLS install failed: DONE gets `status`."""

    def __init__(self, status: int) -> None:
        super().__init__(errno.errorcode.get(status, str(status)))
        self.status = status


def psk_profile(identity: str, key: bytes) -> PskProfile:
    """(hash, suites, key exchange modes) for one PSK, as tlshd's TCP client picks its
    priority cache by the key's length and the hash by an NVMe identity (§3.3, §5).
    _SetupError (EIO) for an NVMe identity naming another hash."""
    match = _NVME_IDENTITY.match(identity)
    if match is not None:
        hash_name = _NVME_HASHES.get(match.group(1))
        if hash_name is None:
            raise _SetupError(f"invalid key identity (NVMe hash {match.group(1)})")
    else:
        hash_name = "sha384" if len(key) == 48 else "sha256"
    suites = _SUITES_BY_KEY_LENGTH.get(len(key))
    if suites is None:
        return hash_name, _KTLS_SUITES, _ANY_MODE
    return hash_name, suites, _DHE_ONLY


def _tcp_config(**kwargs: Any) -> TlsConfig:
    """TLS 1.3 over TCP: no ALPN, no QUIC parameters, no tickets either way."""
    kwargs.setdefault("cipher_suites", _KTLS_SUITES)
    return TlsConfig(alpn_protocols=(), quic=False, send_session_ticket=False, **kwargs)


class TcpRequest:
    """One TCP request (message type and auth mode already checked by request._handle)."""

    def __init__(self, request: HandshakeRequest, config: DaemonConfig, sock: socket.socket, mode: AuthMode,
                 address: str = "", peer: Any = None, on_wait: Callable[[], None] | None = None,
                 install: Installer = install_ktls) -> None:
        self.request = request
        self.config = config
        self.sock = sock
        self.mode = mode
        self.address = address
        self.peer = peer  # getpeername()'s answer, read before the handshake
        self.on_wait = on_wait
        self.install = install
        self.timeout = request.timeout_ms / 1000 if request.timeout_ms else TCP_DEFAULT_TIMEOUT
        self.peername = request.peername
        self.psk_serials: dict[bytes, int] = {}  # server: identity -> the key found for it

    def run(self, message_type: MessageType) -> DoneResult:
        role = "client" if message_type is MessageType.CLIENTHELLO else "server"
        try:
            return self.client() if role == "client" else self.server()
        except _Failed as exc:
            status = exc.status
        except _SetupError as exc:
            log.error("handshake setup failed: %s", exc)
            status = exc.status
        return DoneResult(status, role=role, peername=self.peername or "", address=self.address)

    # -- the handshake and the kTLS install ----------------------------------------------

    def _waiting(self) -> None:
        """The worker may listen for the next request while this one waits (once)."""
        if self.on_wait is not None:
            on_wait, self.on_wait = self.on_wait, None
            on_wait()

    def _handshake(self, engine: ClientEngine | ServerEngine,
                   choose: Chooser | None = None) -> HandshakeComplete:
        """The handshake with TCP_NODELAY forced on (§3.3), then kTLS; _Failed otherwise."""
        self._waiting()
        handshake = TcpTlsHandshake(self.sock, engine, choose)
        with forced_nodelay(self.sock):
            complete = self._run(handshake)
        assert handshake.keys is not None  # run() leaves them on success
        try:
            self.install(self.sock, handshake.keys)
        except KtlsError as exc:
            log.error("kTLS install failed: %s", exc)
            raise _Failed(errno.EIO) from None
        return complete

    def _run(self, handshake: TcpTlsHandshake) -> HandshakeComplete:
        try:
            return handshake.run(self.timeout)
        except PeerAlert as exc:
            status = errno.EKEYREJECTED if exc.alert == AlertDescription.unknown_psk_identity else exc.status
            log.error("TLS handshake failed: %s", exc)
            raise _Failed(status) from None
        except TcpHandshakeError as exc:
            log.error("TLS handshake failed (%s): %s", errno.errorcode.get(exc.status, exc.status), exc)
            raise _Failed(exc.status) from None
        except OSError as exc:  # GnuTLS's push/pull errors are fatal errors: EACCES in tlshd
            log.error("TLS handshake failed: socket error: %s", exc)
            raise _Failed(errno.EACCES) from None

    def _success(self, complete: HandshakeComplete, ids: list[int], role: str) -> DoneResult:
        suite = _suite_name(complete.cipher_suite)
        log.debug("TLS %s handshake over TCP: %s, kTLS installed", role, suite)
        return DoneResult(0, ids, role=role, suite=suite, peername=self.peername or "", address=self.address)

    # -- client (§6.1) -------------------------------------------------------------------

    def client(self) -> DoneResult:
        if self.mode is AuthMode.PSK:
            return self._psk_client()
        settings = self.config.client
        credentials = None
        if self.mode is AuthMode.X509:
            credentials = _serial_credentials(self.request.certificate, self.request.private_key)
            if credentials is None:
                credentials = _file_credentials(settings.certificate, settings.private_key)
            if credentials is None:
                raise _SetupError("x509 mode without a client certificate and key (serials or config)")
        trust = _trust(settings.truststore, settings.crl)
        self._find_peername()
        if not self.peername:
            raise _SetupError("no PEERNAME and no reverse DNS name: cannot verify the server's certificate")
        tls = _tcp_config(server_name=self.peername, trust=trust, credentials=credentials)
        complete = self._handshake(ClientEngine(tls))
        chain = [c.public_bytes(Encoding.DER) for c in complete.peer_certificates]
        ids = kr.remote_peer_ids(self.mode, server=False, quic=False, peer_chain=chain,
                                 peername=self.peername)
        return self._success(complete, ids, "client")

    def _find_peername(self) -> None:
        if self.peername:
            return
        if cached_reverse_name(self.peer) is None:
            self._waiting()  # a lookup may take a while
        self.peername = reverse_lookup(self.sock, self.peer)

    def _psk_client(self) -> DoneResult:
        serials = self.request.peer_identities
        if not serials:
            raise _SetupError("No key identities")
        failure = _Failed(errno.EACCES)
        for serial in serials:
            try:
                return self._psk_client_one(serial)
            except _Failed as exc:
                if exc.status != errno.EACCES:
                    raise
                failure = exc  # tlshd tries the next identity only after EACCES
        raise failure

    def _psk_client_one(self, serial: int) -> DoneResult:
        try:
            psk = kr.read_psk(serial)
        except (OSError, ValueError) as exc:
            raise _SetupError(f"reading PSK {serial}: {exc}") from None
        hash_name, suites, modes = psk_profile(psk.identity, psk.key)
        tls = _tcp_config(psks=[ExternalPsk(psk.identity.encode(), psk.key, hash_name)], verify_peer=False,
                          cipher_suites=suites, psk_modes=modes, server_name=self.peername)
        complete = self._handshake(ClientEngine(tls))
        ids = kr.remote_peer_ids(AuthMode.PSK, server=False, quic=False, psk_serial=serial)
        return self._success(complete, ids, "client")

    # -- server (§6.2) -------------------------------------------------------------------

    def server(self) -> DoneResult:
        if self.mode is AuthMode.PSK:
            return self._psk_server()
        if self.mode is not AuthMode.X509:
            raise _SetupError("Unrecognized auth mode (unauth server)")
        try:
            settings = self.config.server
            credentials = _serial_credentials(self.request.certificate, self.request.private_key)
            if credentials is None:
                credentials = _file_credentials(settings.certificate, settings.private_key)
            if credentials is None:
                raise _SetupError("No usable server certificate/key - check the configuration")
            trust = _trust(settings.truststore, settings.crl)
        except _SetupError:
            self._refuse()
            raise
        tls = _tcp_config(credentials=credentials, trust=trust, client_auth=ClientAuth.OPTIONAL)
        complete = self._handshake(ServerEngine(tls))
        chain = [c.public_bytes(Encoding.DER) for c in complete.peer_certificates]
        ids = kr.remote_peer_ids(AuthMode.X509, server=True, quic=False, peer_chain=chain)
        return self._success(complete, ids, "server")

    def _refuse(self) -> None:
        """tlshd 1.4's fatal access_denied for a server that cannot serve (§9.3): the client
        fails at once instead of retrying. Best effort: the status is EIO either way."""
        alert = plaintext_records(ContentType.ALERT, alert_payload(AlertDescription.access_denied))
        with contextlib.suppress(OSError):
            self.sock.send(alert, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)

    def _psk_server(self) -> DoneResult:
        tls = _tcp_config(pause_at_client_hello=True)
        complete = self._handshake(ServerEngine(tls), self._choose_psk)
        serial = self.psk_serials.get(complete.psk_identity or b"", 0)
        ids = kr.remote_peer_ids(AuthMode.PSK, server=True, quic=False, psk_serial=serial)
        return self._success(complete, ids, "server")

    def _choose_psk(self, info: ClientHelloInfo) -> ServerChoice:
        """The first offered identity with a "psk" key (§5: keyctl_search from the session
        keyring); no key: no PSK, and the engine answers unknown_psk_identity."""
        for identity in info.psk_identities:
            try:
                psk = kr.find_server_psk(identity.decode(), quic=False)
            except (UnicodeDecodeError, OSError) as exc:
                log.debug("no server PSK for identity %r: %s", identity, exc)
                continue
            self.psk_serials[identity] = psk.serial
            hash_name, _, _ = psk_profile(psk.identity, psk.key)
            return ServerChoice(psks=[ExternalPsk(identity, psk.key, hash_name)])
        log.error("no psk key for the client's identities %r", list(info.psk_identities))
        return ServerChoice(psks=[])
