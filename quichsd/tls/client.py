"""TLS 1.3 client for QUIC (RFC 8446 §4, RFC 9001 §4 and §8)."""
from __future__ import annotations

import enum
import os
import time

from . import extensions as ext
from . import keylog as kl
from .certs import is_ip_literal, verify_chain
from .config import ExternalPsk, TlsConfig
from .constants import (
    DOWNGRADE_TLS11,
    DOWNGRADE_TLS12,
    TLS13_VERSION,
    AlertDescription,
    CryptoLevel,
    Direction,
    ExtensionType,
    HandshakeType,
    PskKeyExchangeMode,
    fast_members,
)
from .engine import HandshakeState, StateTable, TlsEngine, Transitions, load_certificate_chain
from .errors import TlsError, illegal_parameter, protocol_violation
from .events import Event, HandshakeComplete, PeerTransportParameters, SendHandshake, SessionTicketReceived
from .groups import ClientKeyShare, client_key_share
from .keyschedule import (
    KeySchedule,
    finished_verify_data,
    message_hash,
    resumption_psk,
)
from .messages import (
    Certificate,
    CertificateRequest,
    ClientHello,
    EncryptedExtensions,
    Finished,
    NewSessionTicket,
    ServerHello,
    encode_client_hello,
    encode_finished,
    extensions_body,
    suites_vector,
)
from .session import MAX_TICKET_LIFETIME, QUIC_MAX_EARLY_DATA, SessionData
from .signatures import choose_scheme_from
from .suites import SUITES, SuiteInfo


class ClientState(HandshakeState):
    START = enum.auto()
    WAIT_SH = enum.auto()
    WAIT_EE = enum.auto()
    WAIT_CERT_CR = enum.auto()
    WAIT_CERT = enum.auto()
    WAIT_CV = enum.auto()
    WAIT_FINISHED = enum.auto()
    CONNECTED = enum.auto()


ET = fast_members(ExtensionType)
HT = fast_members(HandshakeType)
CS = fast_members(ClientState)
_I, _H, _A = CryptoLevel.INITIAL, CryptoLevel.HANDSHAKE, CryptoLevel.APP
_SEND, _RECV = Direction.SEND, Direction.RECV

# RFC 8446 §A.1, with QUIC's levels (RFC 9001 §4.1.3).
CLIENT_STATES: StateTable = {
    CS.START: {},
    CS.WAIT_SH: {HT.SERVER_HELLO: _I},
    CS.WAIT_EE: {HT.ENCRYPTED_EXTENSIONS: _H},
    CS.WAIT_CERT_CR: {HT.CERTIFICATE: _H, HT.CERTIFICATE_REQUEST: _H},
    CS.WAIT_CERT: {HT.CERTIFICATE: _H},
    CS.WAIT_CV: {HT.CERTIFICATE_VERIFY: _H},
    CS.WAIT_FINISHED: {HT.FINISHED: _H},
    CS.CONNECTED: {HT.NEW_SESSION_TICKET: _A},
}

# Every state change of the client (RFC 8446 Appendix A.1), one row per (state, step).
CLIENT_TRANSITIONS: Transitions = {
    (CS.START, "ClientHello sent"): CS.WAIT_SH,
    (CS.WAIT_SH, "ServerHello"): CS.WAIT_EE,
    (CS.WAIT_EE, "EncryptedExtensions"): CS.WAIT_CERT_CR,
    (CS.WAIT_EE, "EncryptedExtensions, PSK accepted"): CS.WAIT_FINISHED,
    (CS.WAIT_CERT_CR, "CertificateRequest"): CS.WAIT_CERT,
    (CS.WAIT_CERT_CR, "Certificate"): CS.WAIT_CV,
    (CS.WAIT_CERT, "Certificate"): CS.WAIT_CV,
    (CS.WAIT_CV, "CertificateVerify"): CS.WAIT_FINISHED,
    (CS.WAIT_FINISHED, "Finished"): CS.CONNECTED,
}

# RFC 8446 §4.2: which extensions may appear in which server message.
_SH_EXTENSIONS = frozenset({ET.SUPPORTED_VERSIONS, ET.KEY_SHARE, ET.PRE_SHARED_KEY})
_HRR_EXTENSIONS = frozenset({ET.SUPPORTED_VERSIONS, ET.KEY_SHARE, ET.COOKIE})
_EE_EXTENSIONS = frozenset(
    {
        ET.SERVER_NAME,
        ET.MAX_FRAGMENT_LENGTH,
        ET.SUPPORTED_GROUPS,
        ET.USE_SRTP,
        ET.HEARTBEAT,
        ET.ALPN,
        ET.CLIENT_CERTIFICATE_TYPE,
        ET.SERVER_CERTIFICATE_TYPE,
        ET.EARLY_DATA,
        ET.RECORD_SIZE_LIMIT,
        ET.QUIC_TRANSPORT_PARAMETERS,
    }
)


_PSK_KE, _PSK_DHE_KE = PskKeyExchangeMode.PSK_KE, PskKeyExchangeMode.PSK_DHE_KE


class _StaticHello:
    """The ClientHello parts that depend on the configuration only, encoded once: the
    leading extensions (as a dict for the engine's checks and as encoded bytes), the
    cipher_suites vector and the psk_key_exchange_modes body."""

    __slots__ = ("extensions", "encoded", "suites", "suites_vec", "psk_modes")

    def __init__(self, cfg: TlsConfig) -> None:
        exts: dict[int, bytes] = {}
        name = cfg.server_name
        if name and not is_ip_literal(name):  # RFC 6066 §3: no IP literals in SNI
            exts[ET.SERVER_NAME] = ext.encode_server_name(name)
        exts[ET.SUPPORTED_GROUPS] = ext.encode_u16_list(cfg.groups)
        exts[ET.SIGNATURE_ALGORITHMS] = ext.encode_u16_list(cfg.signature_schemes)
        if cfg.alpn_protocols:  # always for QUIC (TlsConfig checks); optional over TCP
            exts[ET.ALPN] = ext.encode_alpn(cfg.alpn_protocols)
        exts[ET.SUPPORTED_VERSIONS] = ext.encode_supported_versions_client()
        self.extensions = exts
        self.encoded = extensions_body(exts)
        self.suites = list(cfg.cipher_suites)
        self.suites_vec = suites_vector(self.suites)
        self.psk_modes = ext.encode_psk_modes(cfg.psk_modes)


# The configuration values _StaticHello depends on -> its encodings, shared by every
# configuration with those values: a caller (the socket driver) may build a TlsConfig
# per handshake from the same settings.
_STATIC_HELLOS: dict[tuple[object, ...], _StaticHello] = {}
_STATIC_HELLOS_MAX = 64


def _static_hello_key(cfg: TlsConfig) -> tuple[object, ...]:
    return (cfg.server_name, tuple(cfg.groups), tuple(cfg.signature_schemes),
            tuple(cfg.alpn_protocols), tuple(cfg.cipher_suites), tuple(cfg.psk_modes))


def _static_hello(cfg: TlsConfig) -> _StaticHello:
    static: _StaticHello | None = cfg.encodings.get(_StaticHello)
    if static is None:
        key = _static_hello_key(cfg)
        static = _STATIC_HELLOS.get(key)
        if static is None:
            if len(_STATIC_HELLOS) >= _STATIC_HELLOS_MAX:
                _STATIC_HELLOS.clear()
            static = _STATIC_HELLOS[key] = _StaticHello(cfg)
        cfg.encodings[_StaticHello] = static
    return static


def _check_hello_fits(exts: dict[int, bytes]) -> None:
    """The extension block has a 16-bit length; only a HelloRetryRequest's cookie, which
    the second hello echoes, can make it overflow: the peer's fault, not internal_error."""
    if sum(4 + len(body) for body in exts.values()) > 0xFFFF:
        raise illegal_parameter("HelloRetryRequest cookie too large to echo in a ClientHello")


class _OfferedPsk:
    """The one PSK a ClientHello offers: a resumption ticket or an external key."""

    def __init__(self, suite: SuiteInfo, key: bytes, identity: bytes, external: bool,
                 session: SessionData | None) -> None:
        self.suite = suite
        self.key = key
        self.identity = identity
        self.external = external
        self.session = session
        self.key_schedule = KeySchedule(suite, key)
        self.binder_key = self.key_schedule.binder_key(external)


class ClientEngine(TlsEngine):
    STATES = CLIENT_STATES
    HANDLERS = {
        HT.SERVER_HELLO: "_on_server_hello",
        HT.ENCRYPTED_EXTENSIONS: "_on_encrypted_extensions",
        HT.CERTIFICATE_REQUEST: "_on_certificate_request",
        HT.CERTIFICATE: "_on_certificate",
        HT.CERTIFICATE_VERIFY: "_on_certificate_verify",
        HT.FINISHED: "_on_finished",
        HT.NEW_SESSION_TICKET: "_on_new_session_ticket",
    }
    TRANSITIONS = CLIENT_TRANSITIONS
    INITIAL_STATE = CS.START
    is_client = True

    # Immutable starting values (see TlsEngine).
    _share: ClientKeyShare | None = None
    _hello: ClientHello | None = None
    _hello_bytes = b""
    _psk: _OfferedPsk | None = None
    _retried = False
    _early_data_offered = False
    _cert_request: CertificateRequest | None = None
    _psk_accepted = False
    _psk_ke = False  # the server chose psk_ke: no (EC)DHE in this handshake
    _alpn: bytes | None = None
    _early_accepted = False
    _client_hs = b""
    _server_hs = b""
    _retry_prefix = b""
    peer_transport_parameters: bytes | None = None

    def __init__(self, config: TlsConfig) -> None:
        config.check_client()
        super().__init__(config)

    # -- ClientHello -------------------------------------------------------------------

    def start(self, now: float | None = None) -> list[Event]:
        """Build the first ClientHello (and the 0-RTT key when resuming with early data)."""
        if self.state is not CS.START:
            raise RuntimeError("start() called twice")
        self._now = time.time() if now is None else now
        return self._guard(self._start)

    def _start(self) -> None:
        cfg = self.config
        self._share = client_key_share(cfg.groups[0], cfg.ephemeral_keys)
        self._psk = self._choose_psk()
        self.client_random = os.urandom(32)
        session = self._psk.session if self._psk else None
        self._early_data_offered = bool(
            cfg.enable_early_data
            and session is not None
            and session.max_early_data
            and session.alpn in cfg.alpn_protocols
        )
        hello = self._build_hello(cookie=None)
        self._send(_I, hello)
        self._hello_bytes = hello
        self._advance("ClientHello sent")
        if self._early_data_offered:
            assert self._psk is not None
            self.suite = self._psk.suite
            early = self._psk.key_schedule.client_early_traffic_secret(self._psk.suite.hash(hello))
            self._install(CryptoLevel.EARLY, Direction.SEND, early, kl.CLIENT_EARLY)

    def _choose_psk(self) -> _OfferedPsk | None:
        cfg = self.config
        session = cfg.session
        if session is not None and not session.expired(self._now):
            suite = SUITES.get(session.cipher_suite)
            if suite is not None and session.cipher_suite in cfg.cipher_suites:
                return _OfferedPsk(suite, session.psk, session.ticket, False, session)
        if cfg.psks:
            psk: ExternalPsk = cfg.psks[0]
            suite = next(
                (SUITES[s] for s in cfg.cipher_suites if SUITES[s].hash_name == psk.hash_name), None
            )
            if suite is None:
                raise ValueError(f"no configured suite uses {psk.hash_name} for the external PSK")
            return _OfferedPsk(suite, psk.key, psk.identity, True, None)
        return None

    def _build_hello(self, cookie: bytes | None) -> bytes:
        cfg = self.config
        share = self._share
        assert share is not None
        static = _static_hello(cfg)
        # After the static ones (RFC 8446 §4.2.11: pre_shared_key, if any, comes last).
        tail: dict[int, bytes] = {ET.KEY_SHARE: ext.encode_key_share_client([(share.group, share.public)])}
        if cfg.quic:
            tail[ET.QUIC_TRANSPORT_PARAMETERS] = cfg.transport_parameters
        if cookie is not None:
            tail[ET.COOKIE] = ext.encode_cookie(cookie)
        # Tickets are only issued to clients that name a PSK mode (RFC 8446 §4.2.9).
        tail[ET.PSK_KEY_EXCHANGE_MODES] = static.psk_modes
        if self._early_data_offered and cookie is None:
            tail[ET.EARLY_DATA] = b""
        psk = self._psk
        if psk is None:
            exts = static.extensions | tail
            if cookie is not None:
                _check_hello_fits(exts)
            self._hello = ClientHello(self.client_random, list(static.suites), exts)
            if cfg.client_hello_rewrite is not None:
                self._hello = cfg.client_hello_rewrite(self._hello)
                return self._hello.encode()
            body = static.encoded + extensions_body(tail)
            return encode_client_hello(self.client_random, static.suites_vec, body)
        exts = static.extensions | tail
        age = psk.session.obfuscated_age(self._now) if psk.session else 0
        identity = ext.PskIdentity(psk.identity, age)
        # RFC 8446 §4.2.11.2: binders are computed over the hello with the binders left
        # out, so encode with a zero placeholder first, then fill the real value in.
        placeholder = bytes(psk.suite.hash_len)
        exts[ET.PRE_SHARED_KEY] = ext.encode_offered_psks([identity], [placeholder])
        if cookie is not None:
            _check_hello_fits(exts)
        hello = ClientHello(self.client_random, list(cfg.cipher_suites), exts)
        prefix = hello.binder_prefix()
        th = psk.suite.new_hash()
        if self._retried:
            th.update(self._retry_prefix)
        th.update(prefix)
        binder = finished_verify_data(psk.suite.hash_name, psk.binder_key, th.digest())
        exts[ET.PRE_SHARED_KEY] = ext.encode_offered_psks([identity], [binder])
        self._hello = hello
        return hello.encode()

    # -- ServerHello / HelloRetryRequest -----------------------------------------------

    def _on_server_hello(self, sh: ServerHello, raw: bytes) -> None:
        self._check_server_hello(sh)
        if sh.is_hello_retry_request:
            self._on_hello_retry(sh, raw)
            return
        self._check_unsolicited(sh.extensions, _SH_EXTENSIONS, "ServerHello")
        suite = SUITES[sh.cipher_suite]
        if self._retried and self.suite is not None and suite is not self.suite:
            raise illegal_parameter("ServerHello suite differs from the HelloRetryRequest's")
        key_schedule = self._accept_psk(sh, suite)
        shared = self._shared_secret(sh.extensions.get(ET.KEY_SHARE))
        # After a retry the transcript holds ClientHello1's message_hash and the retry.
        transcript = self.transcript if self._retried else self._start_transcript(suite)
        assert transcript is not None
        transcript.update(self._hello_bytes)
        self.suite = suite
        transcript.update(raw)
        self._check_level_drained(_I)
        key_schedule.handshake(shared)
        self.key_schedule = key_schedule
        self._client_hs, self._server_hs = key_schedule.handshake_traffic_secrets(self._transcript_hash())
        self._install_handshake_secrets(self._client_hs, self._server_hs)
        self._advance("ServerHello")

    def _check_server_hello(self, sh: ServerHello) -> None:
        """What a ServerHello and a HelloRetryRequest must both get right (RFC 8446 §4.1.3)."""
        versions = sh.extensions.get(ET.SUPPORTED_VERSIONS)
        if versions is None:
            tail = sh.random[-8:]
            if tail in (DOWNGRADE_TLS12, DOWNGRADE_TLS11):
                raise illegal_parameter("downgrade sentinel in ServerHello.random (RFC 8446 §4.1.3)")
            raise TlsError(AlertDescription.protocol_version, "server did not select TLS 1.3")
        if ext.decode_u16(versions, "supported_versions") != TLS13_VERSION:
            raise illegal_parameter("server selected a version we did not offer")
        if sh.legacy_version != 0x0303:
            raise TlsError(AlertDescription.protocol_version, "legacy_version is not 0x0303")
        assert self._hello is not None
        if sh.legacy_session_id_echo != self._hello.legacy_session_id:
            raise illegal_parameter("legacy_session_id_echo does not match")
        if sh.legacy_compression_method != 0:
            raise illegal_parameter("compression method is not null")
        if sh.cipher_suite not in self.config.cipher_suites:
            raise illegal_parameter("server chose a cipher suite we did not offer")

    def _shared_secret(self, share: bytes | None) -> bytes | None:
        """The (EC)DHE secret from the ServerHello's key_share; None for psk_ke."""
        if share is None:
            # RFC 8446 §4.2.8, §4.2.9: no key_share means psk_ke, which needs a PSK and our offer.
            if not self._psk_accepted or _PSK_KE not in self.config.psk_modes:
                raise TlsError(AlertDescription.missing_extension, "ServerHello without key_share")
            self._psk_ke = True
            return None
        if self._psk_accepted and _PSK_DHE_KE not in self.config.psk_modes:
            raise illegal_parameter("key_share with a PSK we offered for psk_ke only (RFC 8446 §4.2.9)")
        group, server_share = ext.decode_key_share_server(share)
        assert self._share is not None
        if group != self._share.group:
            raise illegal_parameter("server key share is for a group we did not send")
        return self._share.exchange(server_share)

    def _accept_psk(self, sh: ServerHello, suite: SuiteInfo) -> KeySchedule:
        selected = sh.extensions.get(ET.PRE_SHARED_KEY)
        if selected is None:
            return KeySchedule(suite)
        if self._psk is None:
            raise TlsError(AlertDescription.unsupported_extension, "pre_shared_key without an offer")
        if ext.decode_u16(selected, "pre_shared_key") != 0:
            raise illegal_parameter("server selected a PSK identity we did not offer")
        if self._psk.suite.hash_name != suite.hash_name:
            raise illegal_parameter("server chose a suite whose hash does not fit the PSK")
        self._psk_accepted = True
        if self._psk.suite is suite:
            return self._psk.key_schedule
        return KeySchedule(suite, self._psk.key)

    def _on_hello_retry(self, hrr: ServerHello, raw: bytes) -> None:
        if self._retried:
            raise TlsError(AlertDescription.unexpected_message, "second HelloRetryRequest")
        self._check_unsolicited(hrr.extensions, _HRR_EXTENSIONS, "HelloRetryRequest")
        suite = SUITES[hrr.cipher_suite]
        share = hrr.extensions.get(ET.KEY_SHARE)
        cookie_ext = hrr.extensions.get(ET.COOKIE)
        cookie = ext.decode_cookie(cookie_ext) if cookie_ext is not None else None
        assert self._share is not None
        if share is not None:
            group = ext.decode_u16(share, "key_share")
            if group not in self.config.groups or group == self._share.group:
                raise illegal_parameter("HelloRetryRequest asks for a group we cannot or did already send")
            self._share = client_key_share(group, self.config.ephemeral_keys)
        elif cookie is None:
            raise illegal_parameter("HelloRetryRequest would not change the ClientHello")
        self._retried = True
        # RFC 8446 §4.4.1: ClientHello1 enters the transcript as a message_hash.
        transcript = self._start_transcript(suite)
        prefix = message_hash(suite.hash_name, self._hello_bytes) + raw
        transcript.update(prefix)
        self._retry_prefix = prefix
        self._check_level_drained(CryptoLevel.INITIAL)
        if self._psk is not None and self._psk.suite.hash_name != suite.hash_name:
            self._psk = None
        elif self._psk is not None and self._psk.suite is not suite:
            old = self._psk
            self._psk = _OfferedPsk(suite, old.key, old.identity, old.external, old.session)
        # 0-RTT ends with a retry (RFC 8446 §4.2.10): the second hello does not offer it.
        hello = self._build_hello(cookie)
        self._hello_bytes = hello
        self._send(CryptoLevel.INITIAL, hello)

    def _check_unsolicited(self, exts: dict[int, bytes], allowed: frozenset[int], where: str) -> None:
        assert self._hello is not None
        sent = self._hello.extensions
        if exts.keys() <= sent.keys() and allowed.issuperset(exts):
            return  # the usual answer; otherwise find the first offender, in order
        for ext_type in exts:
            if ext_type not in sent and ext_type != ET.COOKIE:
                raise TlsError(AlertDescription.unsupported_extension,
                               f"unsolicited extension {ext_type} in {where}")
            if ext_type not in allowed:
                raise illegal_parameter(f"extension {ext_type} is not allowed in {where}")

    # -- server's encrypted flight -----------------------------------------------------

    def _on_encrypted_extensions(self, ee: EncryptedExtensions, raw: bytes) -> None:
        self._check_unsolicited(ee.extensions, _EE_EXTENSIONS, "EncryptedExtensions")
        alpn = ee.extensions.get(ET.ALPN)
        if alpn is not None:
            chosen = ext.decode_alpn(alpn)
            if len(chosen) != 1 or chosen[0] not in self.config.alpn_protocols:
                raise illegal_parameter("server selected an ALPN protocol we did not offer")
            self._alpn = chosen[0]
        elif self.config.quic:
            raise TlsError(AlertDescription.no_application_protocol, "server did not select an ALPN protocol")
        params = ee.extensions.get(ET.QUIC_TRANSPORT_PARAMETERS)
        if params is None and self.config.quic:
            raise TlsError(AlertDescription.missing_extension, "no quic_transport_parameters (RFC 9001 §8.2)")
        if ET.EARLY_DATA in ee.extensions:
            ext.expect_empty(ee.extensions[ET.EARLY_DATA], "early_data")
            if not self._psk_accepted or self._retried:
                raise illegal_parameter("early_data accepted without the offered PSK")
            session = self._psk.session if self._psk is not None else None
            if session is not None and self._alpn != session.alpn:
                raise illegal_parameter("0-RTT accepted under another ALPN protocol")
            self._early_accepted = True
        if ET.SERVER_NAME in ee.extensions:
            ext.expect_empty(ee.extensions[ET.SERVER_NAME], "server_name")
        assert self.transcript is not None
        self.transcript.update(raw)
        if params is not None:  # over TCP: never (not offered, so refused as unsolicited)
            self.peer_transport_parameters = params
            self._events.append(PeerTransportParameters(params))
        self._advance("EncryptedExtensions, PSK accepted" if self._psk_accepted else "EncryptedExtensions")

    def _on_certificate_request(self, cr: CertificateRequest, raw: bytes) -> None:
        if cr.context:
            raise illegal_parameter("certificate_request_context must be empty in the handshake")
        ext.check_placement(cr.extensions, ext.CERTIFICATE_REQUEST_EXTENSIONS, "CertificateRequest")
        algs = cr.extensions.get(ET.SIGNATURE_ALGORITHMS)
        if algs is None:
            raise TlsError(AlertDescription.missing_extension,
                           "CertificateRequest without signature_algorithms")
        ext.decode_u16_list(algs, "signature_algorithms")
        self._cert_request = cr
        assert self.transcript is not None
        self.transcript.update(raw)
        self._advance("CertificateRequest")

    def _on_certificate(self, cert: Certificate, raw: bytes) -> None:
        chain = load_certificate_chain(cert)
        if not chain:
            raise TlsError(AlertDescription.decode_error,
                           "server sent an empty Certificate (RFC 8446 §4.4.2.4)")
        if self.config.verify_peer:
            verify_chain(
                self.config.trust_store(), chain, peer_is_server=True,
                server_name=self.config.server_name, now=self._now,
            )
        self.peer_chain = chain
        assert self.transcript is not None
        self.transcript.update(raw)
        self._advance("Certificate")

    def _on_finished(self, fin: Finished, raw: bytes) -> None:
        suite, ks, transcript = self.suite, self.key_schedule, self.transcript
        assert suite is not None and ks is not None and transcript is not None
        self._check_peer_finished(fin, self._server_hs)
        transcript.update(raw)
        self._check_level_drained(_H)
        ks.master()
        through_server_finished = transcript.digest()
        client_ap, server_ap = ks.application_traffic_secrets(through_server_finished)
        if self.config.keylog:
            self._log_secret(kl.EXPORTER, ks.exporter_master_secret(through_server_finished))
        flight = self._client_auth_flight()
        # RFC 8446 §4.4.4: our Finished covers the transcript through our CertificateVerify,
        # which is the server's Finished when we sent no certificate messages.
        finished_hash = transcript.digest() if flight else through_server_finished
        finished = encode_finished(finished_verify_data(suite.hash_name, self._client_hs, finished_hash))
        transcript.update(finished)
        flight.append(finished)
        self._resumption_hash = transcript.digest()
        # Spec §2.4 step 7-8: both 1-RTT keys (send first), then the client's flight.
        self._install_pair(_A, client_ap, server_ap, kl.CLIENT_TRAFFIC_0, kl.SERVER_TRAFFIC_0)
        self._events.append(SendHandshake(_H, b"".join(flight)))
        self._advance("Finished")
        self.handshake_complete = True
        self._events.append(self._complete_event())

    def _client_auth_flight(self) -> list[bytes]:
        """Certificate (possibly empty) and CertificateVerify when the server asked."""
        if self._cert_request is None:
            return []
        assert self.transcript is not None
        creds = self.config.credentials
        if creds is None:
            empty = Certificate(b"", []).encode()
            self.transcript.update(empty)
            return [empty]
        requested = self._cert_request.extensions[ET.SIGNATURE_ALGORITHMS]
        algs = ext.decode_u16_list(requested, "signature_algorithms")
        scheme = choose_scheme_from(creds.signature_schemes, algs, self.config.signature_schemes)
        return self._sign_certificate(creds, scheme)

    def _complete_event(self) -> HandshakeComplete:
        assert self.suite is not None and self._share is not None
        psk = self._psk if self._psk_accepted else None
        return HandshakeComplete(
            version=TLS13_VERSION,
            cipher_suite=int(self.suite.suite),
            group=None if self._psk_ke else int(self._share.group),
            alpn=self._alpn,
            signature_scheme=self.peer_scheme,
            peer_certificates=tuple(self.peer_chain),
            psk_identity=psk.identity if psk is not None and psk.external else None,
            resumed=psk is not None and not psk.external,
            early_data_accepted=self._early_accepted,
            server_name=self.config.server_name,
        )

    # -- post-handshake ------------------------------------------------------------------

    def _on_new_session_ticket(self, nst: NewSessionTicket, raw: bytes) -> None:
        suite = self.suite
        assert suite is not None
        if nst.lifetime > MAX_TICKET_LIFETIME:
            raise illegal_parameter("ticket lifetime over seven days (RFC 8446 §4.6.1)")
        ext.check_placement(nst.extensions, ext.NEW_SESSION_TICKET_EXTENSIONS, "NewSessionTicket")
        max_early = 0
        for ext_type, body in nst.extensions.items():
            if ext_type == ET.EARLY_DATA:
                max_early = ext.decode_max_early_data(body)
                if max_early != QUIC_MAX_EARLY_DATA:
                    raise protocol_violation("max_early_data_size is not 0xffffffff (RFC 9001 §4.6.1)")
        if nst.lifetime == 0:
            return  # RFC 8446 §4.6.1: a ticket that must not be used
        psk = resumption_psk(suite.hash_name, self._resumption_master(), nst.nonce)
        session = SessionData(
            ticket=nst.ticket,
            psk=psk,
            cipher_suite=int(suite.suite),
            age_add=nst.age_add,
            lifetime=nst.lifetime,
            received_at=self._now,
            max_early_data=max_early,
            alpn=self._alpn,
            server_name=self.config.server_name,
            transport_parameters=self.peer_transport_parameters or b"",
        )
        self._events.append(SessionTicketReceived(session))

