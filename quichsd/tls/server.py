"""TLS 1.3 server for QUIC (RFC 8446 §4, RFC 9001 §4 and §8)."""
from __future__ import annotations

import enum
import hmac
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from . import extensions as ext
from . import keylog as kl
from .certs import TrustStore, verify_chain
from .config import ClientAuth, ClientHelloInfo, Credentials, ExternalPsk, ServerChoice, TlsConfig
from .constants import (
    HELLO_RETRY_REQUEST_RANDOM,
    TLS13_VERSION,
    AlertDescription,
    CryptoLevel,
    Direction,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    PskKeyExchangeMode,
    fast_members,
)
from .engine import HandshakeState, StateTable, TlsEngine, Transitions, load_certificate_chain
from .errors import TlsError, illegal_parameter, protocol_violation
from .events import ClientHelloReceived, Event, HandshakeComplete, PeerTransportParameters
from .groups import server_key_exchange, server_key_share
from .keyschedule import KeySchedule, finished_verify_data, message_hash, resumption_psk, verify_finished
from .messages import (
    Certificate,
    CertificateRequest,
    ClientHello,
    Finished,
    NewSessionTicket,
    ServerHello,
    encode_encrypted_extensions,
    encode_finished,
    encode_server_hello,
    extension,
    extensions_body,
)
from .session import QUIC_MAX_EARLY_DATA, TICKET_AGE_TOLERANCE_MS, TicketContents
from .signatures import choose_scheme_from
from .suites import SUITES, SuiteInfo


class ServerState(HandshakeState):
    WAIT_CH = enum.auto()
    WAIT_CH2 = enum.auto()
    WAIT_CERT = enum.auto()
    WAIT_CV = enum.auto()
    WAIT_FINISHED = enum.auto()
    CONNECTED = enum.auto()
    # The ServerHello is out, the rest of the flight waits for continue_flight().
    FLIGHT_PENDING = enum.auto()
    # ClientHelloReceived is out; the answer waits for choose() (pause_at_client_hello).
    WAIT_CHOICE = enum.auto()


ET = fast_members(ExtensionType)
HT = fast_members(HandshakeType)
SS = fast_members(ServerState)
_NO_CLIENT_AUTH, _CLIENT_AUTH_REQUIRED = ClientAuth.NONE, ClientAuth.REQUIRED
_I, _H, _A = CryptoLevel.INITIAL, CryptoLevel.HANDSHAKE, CryptoLevel.APP
_SEND, _RECV = Direction.SEND, Direction.RECV
_PSK_KE, _PSK_DHE_KE = PskKeyExchangeMode.PSK_KE, PskKeyExchangeMode.PSK_DHE_KE
_TLS13_ONLY = ext.encode_supported_versions_client((TLS13_VERSION,))
# psk_key_exchange_modes bodies clients usually send -> the modes, without decoding.
_USUAL_PSK_MODES: dict[bytes, frozenset[int]] = {
    ext.encode_psk_modes(modes): frozenset(modes)
    for modes in ([_PSK_DHE_KE], [_PSK_KE], [_PSK_DHE_KE, _PSK_KE], [_PSK_KE, _PSK_DHE_KE])
}
# Key share failures a psk_ke handshake forgives: it uses no share (RFC 8446 §4.2.9).
_PSK_KE_FORGIVES = (AlertDescription.missing_extension, AlertDescription.handshake_failure)
_SH_VERSIONS = extension(ExtensionType.SUPPORTED_VERSIONS, ext.encode_u16(TLS13_VERSION))

# RFC 8446 §A.2, with QUIC's levels (RFC 9001 §4.1.3). Nothing is expected after the
# handshake: a client sends no post-handshake messages in QUIC.
SERVER_STATES: StateTable = {
    SS.WAIT_CH: {HT.CLIENT_HELLO: _I},
    SS.WAIT_CH2: {HT.CLIENT_HELLO: _I},
    SS.WAIT_CERT: {HT.CERTIFICATE: _H},
    SS.WAIT_CV: {HT.CERTIFICATE_VERIFY: _H},
    SS.WAIT_FINISHED: {HT.FINISHED: _H},
    SS.CONNECTED: {},
    SS.FLIGHT_PENDING: {},
    SS.WAIT_CHOICE: {},
}

# Every state change of the server (RFC 8446 Appendix A.2), one row per (state, step).
SERVER_TRANSITIONS: Transitions = {
    (SS.WAIT_CH, "ClientHello, paused for a choice"): SS.WAIT_CHOICE,
    (SS.WAIT_CHOICE, "choice made"): SS.WAIT_CH,
    (SS.WAIT_CH, "HelloRetryRequest sent"): SS.WAIT_CH2,
    (SS.WAIT_CH, "ServerHello sent alone"): SS.FLIGHT_PENDING,
    (SS.WAIT_CH2, "ServerHello sent alone"): SS.FLIGHT_PENDING,
    (SS.WAIT_CH, "flight sent"): SS.WAIT_FINISHED,
    (SS.WAIT_CH2, "flight sent"): SS.WAIT_FINISHED,
    (SS.FLIGHT_PENDING, "flight sent"): SS.WAIT_FINISHED,
    (SS.WAIT_CH, "flight sent with CertificateRequest"): SS.WAIT_CERT,
    (SS.WAIT_CH2, "flight sent with CertificateRequest"): SS.WAIT_CERT,
    (SS.FLIGHT_PENDING, "flight sent with CertificateRequest"): SS.WAIT_CERT,
    (SS.WAIT_CERT, "empty Certificate"): SS.WAIT_FINISHED,
    (SS.WAIT_CERT, "Certificate"): SS.WAIT_CV,
    (SS.WAIT_CV, "CertificateVerify"): SS.WAIT_FINISHED,
    (SS.WAIT_FINISHED, "Finished"): SS.CONNECTED,
}

# (selected ALPN, early_data accepted) -> EncryptedExtensions' leading extensions.
_EE_PREFIXES: dict[tuple[bytes | None, bool], bytes] = {}

# One random key per process for HelloRetryRequest cookies (we keep state anyway; the
# cookie binds the retried hello to the first one).
_COOKIE_KEY = secrets.token_bytes(32)


@dataclass
class _Psk:
    """A PSK the server accepted: external or from one of its tickets."""

    key: bytes
    index: int
    hash_name: str
    external: ExternalPsk | None
    ticket: TicketContents | None


class ServerEngine(TlsEngine):
    STATES = SERVER_STATES
    HANDLERS = {
        HT.CLIENT_HELLO: "_on_client_hello",
        HT.CERTIFICATE: "_on_certificate",
        HT.CERTIFICATE_VERIFY: "_on_certificate_verify",
        HT.FINISHED: "_on_finished",
    }
    TRANSITIONS = SERVER_TRANSITIONS
    INITIAL_STATE = SS.WAIT_CH
    is_client = False

    # Immutable starting values (see TlsEngine).
    _hello1: ClientHello | None = None
    _hrr_group: NamedGroup | None = None
    _cookie = b""
    _group: NamedGroup | None = None
    _alpn: bytes | None = None
    _server_name: str | None = None
    _psk: _Psk | None = None
    _early_accepted = False
    _client_hs = b""
    _client_ap = b""
    # The PSK key exchange mode we would use (RFC 8446 §4.2.9): psk_dhe_ke if the client
    # offers it, else psk_ke if it offers that and we accept it, else None (no PSK, no tickets).
    _psk_mode: PskKeyExchangeMode | None = None
    _client_ticket_age = 0
    _retry_prefix = b""
    _psk_key_schedule: KeySchedule | None = None
    peer_transport_parameters: bytes | None = None
    # With config.server_hello_first: what continue_flight() needs (the suite, the
    # signature scheme, the call that makes the shared secret).
    _rest_of_flight: tuple[SuiteInfo, int | None, Callable[[], bytes]] | None = None
    # With config.pause_at_client_hello: the ClientHello (and its bytes) choose() answers.
    _paused_hello: tuple[ClientHello, bytes] | None = None

    def __init__(self, config: TlsConfig) -> None:
        config.check_server()
        super().__init__(config)
        self._credentials: Credentials | None = config.credentials
        self._trust: TrustStore | None = config.trust
        self._alpn_choices: Sequence[bytes] = config.alpn_protocols
        self._psks: Sequence[ExternalPsk] = config.psks
        self._local_params = config.transport_parameters

    # -- ClientHello: parse, validate, decide, emit --------------------------------------

    def _on_client_hello(self, ch: ClientHello, raw: bytes) -> None:
        retry = self.state is SS.WAIT_CH2
        self._validate_hello(ch)
        if retry:
            self._validate_retried_hello(ch)
        elif self.config.pause_at_client_hello:
            self._paused_hello = (ch, raw)
            self._events.append(ClientHelloReceived(self._client_hello_info(ch)))
            self._advance("ClientHello, paused for a choice")
            return
        self._answer_client_hello(ch, raw, retry)

    def choose(self, choice: ServerChoice | None, now: float | None = None) -> list[Event]:
        """Continue after ClientHelloReceived with the driver's choice (None: keep the
        configuration); returns the events of the answer (ServerHello onwards)."""
        if self.state is not SS.WAIT_CHOICE or self._paused_hello is None:
            raise RuntimeError("no ClientHello waits for a choice")
        if now is not None:
            self._now = now
        ch, raw = self._paused_hello
        self._paused_hello = None
        self._advance("choice made")
        return self._guard(self._choose_and_answer, ch, raw, choice)

    def _choose_and_answer(self, ch: ClientHello, raw: bytes, choice: ServerChoice | None) -> None:
        if choice is not None:
            self._apply_choice(choice)
        self._answer_client_hello(ch, raw, False)

    def _answer_client_hello(self, ch: ClientHello, raw: bytes, retry: bool) -> None:
        suites = self._common_suites(ch)
        alpn = self._choose_alpn(ch)
        # psk_ke needs no key share: a client that offers only it may send none, or one we
        # cannot use. Such a problem counts only if the PSK is not accepted after all.
        psk_ke = self._psk_mode == _PSK_KE and ET.PRE_SHARED_KEY in ch.extensions
        share_error: TlsError | None = None
        try:
            share = self._choose_share(ch, retry)
        except TlsError as exc:
            if not psk_ke or exc.alert not in _PSK_KE_FORGIVES:
                raise
            share, share_error = None, exc
        psk, suite = self._choose_psk(ch, suites, raw, retry)
        if psk is None and self._credentials is None:
            if ET.PRE_SHARED_KEY in ch.extensions and self._psk_mode is None:
                raise TlsError(AlertDescription.handshake_failure,
                               "no PSK key exchange mode in common and no certificate")
            raise TlsError(AlertDescription.handshake_failure, "no acceptable PSK and no certificate")
        if psk is not None and psk_ke:
            group, client_share = None, None  # RFC 8446 §4.2.9 psk_ke: no key_share in the ServerHello
        elif share_error is not None:
            raise share_error
        elif share is None:
            self._send_hello_retry(ch, suite, raw)
            return
        else:
            group, client_share = share
        scheme = None
        if psk is None:
            assert self._credentials is not None
            algs = ch.extensions.get(ET.SIGNATURE_ALGORITHMS)
            if algs is None:
                raise TlsError(AlertDescription.missing_extension, "no signature_algorithms")
            offered = ext.decode_u16_list(algs, "signature_algorithms")
            scheme = choose_scheme_from(
                self._credentials.signature_schemes, offered, self.config.signature_schemes
            )
        self._alpn = alpn
        self._group = group
        self._psk = psk
        self._early_accepted = self._accept_early_data(ch, psk, suite, alpn, retry)
        self._emit_server_flight(ch, raw, suite, group, client_share, scheme)

    def _validate_hello(self, ch: ClientHello) -> None:
        exts = ch.extensions
        ext.check_placement(exts, ext.CLIENT_HELLO_EXTENSIONS, "ClientHello")
        versions = exts.get(ET.SUPPORTED_VERSIONS)
        # The usual body, TLS 1.3 alone, is checked by comparison; any other is decoded.
        if versions != _TLS13_ONLY and (
            versions is None or TLS13_VERSION not in ext.decode_supported_versions_client(versions)
        ):
            raise TlsError(AlertDescription.protocol_version, "client does not offer TLS 1.3")
        if ch.legacy_compression_methods != b"\x00":
            raise illegal_parameter("legacy_compression_methods is not just null (RFC 8446 §4.1.2)")
        quic = self.config.quic  # over TCP: a session id is echoed, no transport parameters
        if ch.legacy_session_id and quic:
            # RFC 9001 §8.4: middlebox compatibility mode is a PROTOCOL_VIOLATION in QUIC.
            raise protocol_violation("ClientHello with a legacy_session_id")
        params = exts.get(ET.QUIC_TRANSPORT_PARAMETERS)
        if params is None and quic:
            raise TlsError(AlertDescription.missing_extension, "no quic_transport_parameters (RFC 9001 §8.2)")
        self.peer_transport_parameters = params
        name = exts.get(ET.SERVER_NAME)
        self._server_name = ext.decode_server_name(name) if name is not None else None
        if ET.PRE_SHARED_KEY in exts and ET.PSK_KEY_EXCHANGE_MODES not in exts:
            raise TlsError(AlertDescription.missing_extension,
                           "pre_shared_key without psk_key_exchange_modes")
        modes = exts.get(ET.PSK_KEY_EXCHANGE_MODES)
        self._psk_mode = None  # decided anew for a second ClientHello
        if modes is not None:
            offered = _USUAL_PSK_MODES.get(modes)
            if offered is None:
                offered = frozenset(ext.decode_psk_modes(modes))
            for mode in self.config.psk_modes:  # psk_dhe_ke first
                if mode in offered:
                    self._psk_mode = mode
                    break

    def _validate_retried_hello(self, ch: ClientHello) -> None:
        """RFC 8446 §4.1.2: the second hello may only change what the retry asked for."""
        first = self._hello1
        assert first is not None
        if ch.cipher_suites != first.cipher_suites or ch.random != first.random:
            raise illegal_parameter("second ClientHello changed its random or suites")
        if ET.EARLY_DATA in ch.extensions:
            raise illegal_parameter("early_data after a HelloRetryRequest")
        cookie = ch.extensions.get(ET.COOKIE)
        if cookie is None or not hmac.compare_digest(ext.decode_cookie(cookie), self._cookie):
            raise illegal_parameter("second ClientHello does not echo the cookie")
        qtp = ET.QUIC_TRANSPORT_PARAMETERS
        if ch.extensions.get(qtp) != first.extensions.get(qtp):
            raise illegal_parameter("second ClientHello changed its transport parameters")

    def _client_hello_info(self, ch: ClientHello) -> ClientHelloInfo:
        alpn = ch.extensions.get(ET.ALPN)
        psk_ext = ch.extensions.get(ET.PRE_SHARED_KEY)
        return ClientHelloInfo(
            server_name=self._server_name,
            alpn_protocols=tuple(ext.decode_alpn(alpn)) if alpn is not None else (),
            transport_parameters=self.peer_transport_parameters or b"",
            psk_identities=tuple(i.identity for i in ext.decode_offered_psks(psk_ext)[0]) if psk_ext else (),
        )

    def _apply_choice(self, choice: ServerChoice) -> None:
        if choice.credentials is not None:
            self._credentials = choice.credentials
        if choice.trust is not None:
            self._trust = choice.trust
        if choice.alpn_protocols is not None:
            self._alpn_choices = [bytes(p) for p in choice.alpn_protocols]
        if choice.transport_parameters is not None:
            self._local_params = choice.transport_parameters
        if choice.psks is not None:
            self._psks = list(choice.psks)

    def _common_suites(self, ch: ClientHello) -> list[SuiteInfo]:
        """Suites both sides support, in our preference order."""
        common = [SUITES[s] for s in self.config.cipher_suites if s in ch.cipher_suites]
        if not common:
            raise TlsError(AlertDescription.handshake_failure, "no cipher suite in common")
        if self.state is SS.WAIT_CH2:
            assert self.suite is not None
            return [self.suite]  # RFC 8446 §4.1.4: the suite of the HelloRetryRequest
        return common

    def _choose_alpn(self, ch: ClientHello) -> bytes | None:
        """RFC 7301 §3.2 and RFC 9001 §8.1; client preference, as the kernel's dispatch.
        Over TCP ALPN is optional: None when either side has none."""
        raw = ch.extensions.get(ET.ALPN)
        if not self.config.quic and (raw is None or not self._alpn_choices):
            return None
        if raw is None:
            raise TlsError(AlertDescription.no_application_protocol, "ClientHello without ALPN")
        for proto in ext.decode_alpn(raw):
            if proto in self._alpn_choices:
                return proto
        raise TlsError(AlertDescription.no_application_protocol, "no ALPN protocol in common")

    def _choose_share(self, ch: ClientHello, retry: bool) -> tuple[NamedGroup, bytes] | None:
        exts = ch.extensions
        if ET.SUPPORTED_GROUPS not in exts:
            raise TlsError(AlertDescription.missing_extension, "no supported_groups")
        if ET.KEY_SHARE not in exts:
            raise TlsError(AlertDescription.missing_extension, "no key_share")
        groups = ext.decode_u16_list(exts[ET.SUPPORTED_GROUPS], "supported_groups")
        shares = ext.decode_key_share_client(exts[ET.KEY_SHARE])
        for group, _ in shares:
            if group not in groups:
                raise illegal_parameter("key share for a group not in supported_groups (RFC 8446 §4.2.8)")
        if retry:
            hrr_group = self._hrr_group
            if hrr_group is None or len(shares) != 1 or shares[0][0] != hrr_group:
                raise illegal_parameter("second ClientHello lacks the requested key share")
            return hrr_group, shares[0][1]
        offered = dict(shares)
        for group in self.config.groups:
            if group in offered:
                return group, offered[group]
        for group in self.config.groups:
            if group in groups:
                self._hrr_group = group
                return None
        raise TlsError(AlertDescription.handshake_failure, "no key exchange group in common")

    def _choose_psk(self, ch: ClientHello, suites: list[SuiteInfo], raw: bytes,
                    retry: bool) -> tuple[_Psk | None, SuiteInfo]:
        """The first offered PSK we know, with a suite of its hash (RFC 8446 §4.2.11);
        without one, our preferred suite."""
        psk_ext = ch.extensions.get(ET.PRE_SHARED_KEY)
        if psk_ext is None:
            return None, suites[0]
        identities, binders = ext.decode_offered_psks(psk_ext)
        if self._psk_mode is None:
            return None, suites[0]  # no mode in common (RFC 8446 §4.2.9): a full handshake
        for index, identity in enumerate(identities):
            psk = self._lookup_psk(index, identity)
            if psk is None:
                continue
            # A ticket resumes under its own suite when the client still offers it (that
            # keeps 0-RTT possible); otherwise any suite of the same hash (RFC 8446 §4.6.1).
            fits = [s for s in suites if s.hash_name == psk.hash_name]
            own = [s for s in fits if psk.ticket is not None and s.suite == psk.ticket.cipher_suite]
            candidates = own or fits
            if not candidates:
                continue
            suite = candidates[0]
            self._check_binder(ch, raw, suite, psk, binders[index], retry)
            return psk, suite
        if self._credentials is None:
            raise TlsError(AlertDescription.unknown_psk_identity, "no offered PSK identity is usable")
        return None, suites[0]

    def _lookup_psk(self, index: int, identity: ext.PskIdentity) -> _Psk | None:
        for external in self._psks:
            if hmac.compare_digest(external.identity, identity.identity):
                return _Psk(external.key, index, external.hash_name, external, None)
        sealer = self.config.ticket_sealer
        if sealer is None:
            return None
        contents = sealer.open(identity.identity)
        if contents is None:
            return None
        ticket_suite = SUITES.get(contents.cipher_suite)
        if ticket_suite is None:
            return None
        age_ms = int(self._now * 1000) - contents.created_ms
        if age_ms < 0 or age_ms >= contents.lifetime * 1000:
            return None
        # RFC 8446 §4.2.11.1: the client's view of the ticket age, de-obfuscated.
        self._client_ticket_age = (identity.obfuscated_ticket_age - contents.age_add) & 0xFFFFFFFF
        return _Psk(contents.psk, index, ticket_suite.hash_name, None, contents)

    def _check_binder(self, ch: ClientHello, raw: bytes, suite: SuiteInfo, psk: _Psk,
                      binder: bytes, retry: bool) -> None:
        """RFC 8446 §4.2.11.2: a binder that does not verify aborts with decrypt_error."""
        ks = KeySchedule(suite, psk.key)
        th = suite.new_hash()
        if retry:
            th.update(self._retry_prefix)
        binders_len = len(raw) - len(ch.binder_prefix())
        th.update(raw[: len(raw) - binders_len])
        expected = finished_verify_data(suite.hash_name, ks.binder_key(psk.external is not None), th.digest())
        if not verify_finished(expected, binder):
            raise TlsError(AlertDescription.decrypt_error, "PSK binder does not verify")
        self._psk_key_schedule = ks

    def _accept_early_data(self, ch: ClientHello, psk: _Psk | None, suite: SuiteInfo,
                           alpn: bytes | None, retry: bool) -> bool:
        """RFC 8446 §4.2.10 and RFC 9001 §4.6: accept 0-RTT only for the first PSK, from
        one of our tickets, under the same suite and ALPN, fresh, and used once."""
        if ET.EARLY_DATA not in ch.extensions or retry:
            return False
        ext.expect_empty(ch.extensions[ET.EARLY_DATA], "early_data")
        if psk is None or psk.index != 0 or psk.ticket is None or not self.config.enable_early_data:
            return False
        ticket = psk.ticket
        if ticket.max_early_data == 0 or ticket.cipher_suite != suite.suite or ticket.alpn != alpn:
            return False
        expected_age = int(self._now * 1000) - ticket.created_ms
        if abs(expected_age - self._client_ticket_age) > TICKET_AGE_TOLERANCE_MS:
            return False
        expires = ticket.created_ms / 1000 + ticket.lifetime
        guard = self.config.replay_guard
        assert guard is not None  # TlsConfig.__post_init__ sets one
        return guard.first_use(ticket.nonce, expires, self._now)

    # -- HelloRetryRequest ---------------------------------------------------------------

    def _send_hello_retry(self, ch: ClientHello, suite: SuiteInfo, raw: bytes) -> None:
        if self.state is SS.WAIT_CH2:
            raise illegal_parameter("second ClientHello still has no usable key share")
        assert self._hrr_group is not None
        transcript = self._start_transcript(suite)
        self._cookie = hmac.digest(_COOKIE_KEY, suite.hash(raw), "sha256")
        exts: dict[int, bytes] = {
            ET.SUPPORTED_VERSIONS: ext.encode_u16(TLS13_VERSION),
            ET.KEY_SHARE: ext.encode_u16(self._hrr_group),
            ET.COOKIE: ext.encode_cookie(self._cookie),
        }
        hrr = ServerHello(HELLO_RETRY_REQUEST_RANDOM, int(suite.suite), exts, ch.legacy_session_id).encode()
        # RFC 8446 §4.4.1: ClientHello1 enters the transcript as a message_hash.
        self._retry_prefix = message_hash(suite.hash_name, raw) + hrr
        transcript.update(self._retry_prefix)
        self._hello1 = ch
        self._check_level_drained(CryptoLevel.INITIAL)
        self._send(CryptoLevel.INITIAL, hrr)
        self._advance("HelloRetryRequest sent")

    # -- the server's flight --------------------------------------------------------------

    def _emit_server_flight(self, ch: ClientHello, raw: bytes, suite: SuiteInfo, group: NamedGroup | None,
                            client_share: bytes | None, scheme: int | None) -> None:
        self.client_random = ch.random
        transcript = self._start_transcript(suite) if self.state is SS.WAIT_CH else self.transcript
        assert transcript is not None
        transcript.update(raw)
        self._check_level_drained(_I)
        psk = self._psk
        ks = self._psk_key_schedule if psk is not None and self._psk_key_schedule else KeySchedule(suite)
        self.key_schedule = ks
        params = self.peer_transport_parameters
        # Over TCP there are none; with a pause, ClientHelloReceived carried them.
        if params is not None and not self.config.pause_at_client_hello:
            self._events.append(PeerTransportParameters(params))
        if self._early_accepted:
            early = ks.client_early_traffic_secret(transcript.digest())
            self._install(CryptoLevel.EARLY, _RECV, early, kl.CLIENT_EARLY)

        # RFC 8446 §4.1.3: supported_versions, key_share (unless psk_ke), and pre_shared_key
        # with a PSK; psk_ke's handshake secret comes from zeros instead of a shared secret.
        shared: bytes | None = None
        make_shared = None
        sh_exts = _SH_VERSIONS
        if group is not None:
            assert client_share is not None
            pool = self.config.ephemeral_keys
            split = server_key_share(group, client_share, pool) if self.config.server_hello_first else None
            if split is not None:
                server_share, make_shared = split
            else:
                server_share, shared = server_key_exchange(group, client_share, pool)
            sh_exts += extension(ET.KEY_SHARE, ext.encode_key_share_server(group, server_share))
        if psk is not None:
            sh_exts += extension(ET.PRE_SHARED_KEY, ext.encode_u16(psk.index))
        sh = encode_server_hello(os.urandom(32), suite.suite, sh_exts, ch.legacy_session_id)
        transcript.update(sh)
        if make_shared is not None:
            # The ServerHello needs only our share: it goes first, the rest follows.
            self._send(_I, sh)
            self._rest_of_flight = (suite, scheme, make_shared)
            self._advance("ServerHello sent alone")
            return
        self._rest_of_server_flight(suite, scheme, shared, sh)

    @property
    def flight_pending(self) -> bool:
        """The ServerHello was sent alone (config.server_hello_first); continue_flight()
        gives the rest."""
        return self._rest_of_flight is not None

    def continue_flight(self, now: float | None = None) -> list[Event]:
        """The rest of the server's first flight after a ServerHello sent alone: the
        handshake keys, EncryptedExtensions..Finished, the 1-RTT send key."""
        if self._rest_of_flight is None:
            raise RuntimeError("no flight pending")
        if now is not None:
            self._now = now
        suite, scheme, make_shared = self._rest_of_flight
        self._rest_of_flight = None
        return self._guard(lambda: self._rest_of_server_flight(suite, scheme, make_shared(), None))

    def _rest_of_server_flight(self, suite: SuiteInfo, scheme: int | None, shared: bytes | None,
                               sh: bytes | None) -> None:
        """From the handshake secret on; `sh`: the ServerHello to send first, if not sent."""
        ks, transcript, psk = self.key_schedule, self.transcript, self._psk
        assert ks is not None and transcript is not None
        ks.handshake(shared)
        self._client_hs, server_hs = ks.handshake_traffic_secrets(transcript.digest())
        if sh is not None:
            self._send(_I, sh)
        self._install_handshake_secrets(self._client_hs, server_hs)

        flight = [self._encrypted_extensions()]
        request = psk is None and self.config.client_auth is not _NO_CLIENT_AUTH
        if request:
            cr = CertificateRequest(
                b"", {ET.SIGNATURE_ALGORITHMS: ext.encode_u16_list(self.config.signature_schemes)}
            )
            flight.append(cr.encode())
        for message in flight:
            transcript.update(message)
        if scheme is not None:
            assert self._credentials is not None
            flight += self._sign_certificate(self._credentials, scheme)
        finished = encode_finished(finished_verify_data(suite.hash_name, server_hs, transcript.digest()))
        transcript.update(finished)
        flight.append(finished)
        ks.master()
        through_finished = transcript.digest()
        self._client_ap, server_ap = ks.application_traffic_secrets(through_finished)
        if self.config.keylog:
            self._log_secret(kl.EXPORTER, ks.exporter_master_secret(through_finished))
        self._send(_H, *flight)
        self._install(_A, _SEND, server_ap, kl.SERVER_TRAFFIC_0)
        self._advance("flight sent with CertificateRequest" if request else "flight sent")

    def _encrypted_extensions(self) -> bytes:
        """ALPN, early_data when accepted, then quic_transport_parameters (RFC 8446 §4.3.1).

        All but the transport parameters (which may differ per connection) depend on the
        ALPN choice and the 0-RTT answer alone, so are encoded once per process."""
        alpn = self._alpn  # None only over TCP
        key = (alpn, self._early_accepted)
        prefix = _EE_PREFIXES.get(key)
        if prefix is None:
            exts: dict[int, bytes] = {ET.ALPN: ext.encode_alpn([alpn])} if alpn is not None else {}
            if self._early_accepted:
                exts[ET.EARLY_DATA] = b""
            prefix = extensions_body(exts)
            if len(_EE_PREFIXES) < 64:  # a hook picks ALPN values; keep the cache bounded
                _EE_PREFIXES[key] = prefix
        if not self.config.quic:
            return encode_encrypted_extensions(prefix)
        params = extension(ET.QUIC_TRANSPORT_PARAMETERS, self._local_params)
        return encode_encrypted_extensions(prefix + params)

    # -- client's flight ------------------------------------------------------------------

    def _on_certificate(self, cert: Certificate, raw: bytes) -> None:
        chain = load_certificate_chain(cert)
        assert self.transcript is not None
        self.transcript.update(raw)
        if not chain:
            if self.config.client_auth is _CLIENT_AUTH_REQUIRED:
                raise TlsError(AlertDescription.certificate_required, "client sent no certificate")
            self._advance("empty Certificate")
            return
        if self.config.verify_peer:
            trust = self._trust or self.config.trust_store()
            verify_chain(trust, chain, peer_is_server=False, server_name=None, now=self._now)
        self.peer_chain = chain
        self._advance("Certificate")

    def _on_finished(self, fin: Finished, raw: bytes) -> None:
        suite, ks, transcript = self.suite, self.key_schedule, self.transcript
        assert suite is not None and ks is not None and transcript is not None
        self._check_peer_finished(fin, self._client_hs)
        transcript.update(raw)
        self._check_level_drained(_H)
        self._resumption_hash = transcript.digest()
        self._install(_A, _RECV, self._client_ap, kl.CLIENT_TRAFFIC_0)
        self._advance("Finished")
        self.handshake_complete = True
        if self.config.send_session_ticket:
            self._issue_ticket()
        self._events.append(self._complete_event())

    # -- tickets --------------------------------------------------------------------------

    def issue_session_ticket(self, now: float | None = None) -> list[Event]:
        """Another NewSessionTicket (level APP) on request, after the handshake."""
        if not self.handshake_complete:
            raise RuntimeError("tickets can only be issued after the handshake")
        self._now = time.time() if now is None else now
        return self._guard(self._issue_ticket)

    def _issue_ticket(self) -> None:
        sealer = self.config.ticket_sealer
        if sealer is None or self._psk_mode is None:
            return
        suite = self.suite
        assert suite is not None
        fresh = os.urandom(12)  # the ticket_nonce and ticket_age_add (RFC 8446 §4.6.1)
        nonce = fresh[:8]
        age_add = int.from_bytes(fresh[8:], "big")
        psk = resumption_psk(suite.hash_name, self._resumption_master(), nonce)
        lifetime = self.config.ticket_lifetime
        chain = self.peer_chain
        peer_cert = chain[0].public_bytes(Encoding.DER) if chain else self._ticket_peer_cert()
        contents = TicketContents(
            psk=psk,
            cipher_suite=int(suite.suite),
            created_ms=int(self._now * 1000),
            age_add=age_add,
            lifetime=lifetime,
            max_early_data=QUIC_MAX_EARLY_DATA if self.config.enable_early_data else 0,
            alpn=self._alpn,
            server_name=self._server_name,
            peer_certificate=peer_cert,
            psk_identity=self._psk.external.identity if self._psk and self._psk.external else None,
        )
        exts: dict[int, bytes] = {}
        if self.config.enable_early_data:
            exts[ET.EARLY_DATA] = QUIC_MAX_EARLY_DATA.to_bytes(4, "big")
        nst = NewSessionTicket(lifetime, age_add, nonce, sealer.seal(contents), exts)
        self._send(CryptoLevel.APP, nst.encode())

    def _ticket_peer_cert(self) -> bytes | None:
        if self._psk is not None and self._psk.ticket is not None:
            return self._psk.ticket.peer_certificate
        return None

    def _complete_event(self) -> HandshakeComplete:
        assert self.suite is not None
        psk = self._psk
        peer = tuple(self.peer_chain)
        identity = None
        if psk is not None and psk.external is not None:
            identity = psk.external.identity
        elif psk is not None and psk.ticket is not None:
            identity = psk.ticket.psk_identity
            if psk.ticket.peer_certificate:
                peer = (x509.load_der_x509_certificate(psk.ticket.peer_certificate),)
        return HandshakeComplete(
            version=TLS13_VERSION,
            cipher_suite=int(self.suite.suite),
            group=int(self._group) if self._group is not None else None,
            alpn=self._alpn,
            signature_scheme=self.peer_scheme,
            peer_certificates=peer,
            psk_identity=identity,
            resumed=psk is not None and psk.ticket is not None,
            early_data_accepted=self._early_accepted,
            server_name=self._server_name,
        )
