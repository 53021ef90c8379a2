"""Negative suite in the spirit of h3spec: one test per MUST the engine enforces.

Each test runs a real handshake between our client and our server, alters one message on
the way (decoded, edited and re-encoded, or cut at the byte level), and checks that the
receiving engine fails with the exact alert (TlsError.alert) and QUIC error code
(TlsError.quic_error: 0x100 + alert, or 0x0a PROTOCOL_VIOLATION where RFC 9001 says so),
and that it stays failed afterwards.
"""
from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from quichsd.tls import extensions as ext
from quichsd.tls.config import ClientAuth, Credentials, ExternalPsk
from quichsd.tls.constants import (
    DOWNGRADE_TLS11,
    DOWNGRADE_TLS12,
    CipherSuite,
    CryptoLevel,
    NamedGroup,
    SignatureScheme,
)
from quichsd.tls.constants import (
    AlertDescription as A,
)
from quichsd.tls.constants import (
    ExtensionType as ET,
)
from quichsd.tls.constants import (
    HandshakeType as HT,
)
from quichsd.tls.errors import TlsError
from quichsd.tls.events import HandshakeComplete
from quichsd.tls.messages import Certificate, CertificateEntry, frame
from tests.pki import make_ca, new_key
from tests.tls_tamper import (
    Pair,
    T,
    client_cfg,
    creds,
    psk_client_cfg,
    psk_server_cfg,
    reflight,
    rewrite,
    rewrite_raw,
    server_cfg,
    trust,
    with_extension_list,
)

INI, H, APP, EARLY = CryptoLevel.INITIAL, CryptoLevel.HANDSHAKE, CryptoLevel.APP, CryptoLevel.EARLY
PROTOCOL_VIOLATION = 0x0A
KEY_UPDATE = frame(HT.KEY_UPDATE, b"\x00")
END_OF_EARLY_DATA = frame(HT.END_OF_EARLY_DATA, b"")


def check_failed(engine, err: TlsError, alert: A | None, quic_error: int | None) -> None:
    if alert is not None:
        assert err.alert == alert, f"{err!r} (wanted {alert.name})"
    want = quic_error if quic_error is not None else 0x100 + int(alert)  # type: ignore[arg-type]
    assert err.quic_error == want, f"quic_error {err.quic_error:#x} for {err!r}, wanted {want:#x}"
    assert err.alert != A.internal_error
    # Fail-once discipline: the engine keeps the error and raises it again on any input.
    assert engine.failed is err
    for level, data in ((H, b""), (INI, b"\x14\x00\x00\x00"), (APP, KEY_UPDATE)):
        with pytest.raises(TlsError) as again:
            engine.receive(level, data, T)
        assert again.value is err


def fails(pair: Pair, hook, side: str, alert: A | None, quic_error: int | None = None) -> TlsError:
    """Run `pair` through `hook`; `side` must raise `alert` (and `quic_error`)."""
    with pytest.raises(TlsError) as info:
        pair.run(hook)
    assert pair.receiver == side, f"{pair.receiver} raised {info.value!r}, expected the {side}"
    check_failed(pair.engine(side), info.value, alert, quic_error)
    return info.value


def fails_on(engine, level: CryptoLevel, data: bytes, alert: A | None, quic_error: int | None = None) -> None:
    """Feed `data` to `engine` directly; it must raise `alert` (and `quic_error`)."""
    with pytest.raises(TlsError) as info:
        engine.receive(level, data, T)
    check_failed(engine, info.value, alert, quic_error)


def set_ext(ext_type: int, body: bytes | None):
    """An editor for rewrite(): set (or with None, remove) one extension, keeping order."""

    def edit(msg):
        if body is None:
            msg.extensions.pop(ext_type, None)
        else:
            msg.extensions[ext_type] = body

    return edit


def x25519_public() -> bytes:
    return x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()


def p256_public() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def off_curve(point: bytes) -> bytes:
    """An uncompressed point with its last byte changed: almost surely not on the curve."""
    return point[:-1] + bytes((point[-1] ^ 0x01,))


def flip_last(raw: bytes) -> bytes:
    return raw[:-1] + bytes((raw[-1] ^ 0x01,))


def ticket_pair(**client_kw) -> Pair:
    """A pair that resumes a session issued by a first full handshake."""
    key = os.urandom(64)
    first = Pair(client_cfg(), server_cfg(session_ticket_key=key, enable_early_data=True)).run()
    assert first.session is not None
    return Pair(client_cfg(session=first.session, **client_kw),
                server_cfg(session_ticket_key=key, enable_early_data=True), T + 1)


def hrr_pair(**client_kw) -> Pair:
    """The client's one share is X25519; the server only takes P-256 and asks for it."""
    kw = dict(groups=[NamedGroup.X25519, NamedGroup.SECP256R1])
    kw.update(client_kw)
    return Pair(client_cfg(**kw), server_cfg(groups=[NamedGroup.SECP256R1]))


def test_the_unaltered_pairs_complete() -> None:
    """Sanity: every setup used below completes when nothing is altered."""
    for pair in (
        Pair(client_cfg(), server_cfg()), hrr_pair(), ticket_pair(enable_early_data=True),
        Pair(psk_client_cfg(), psk_server_cfg()),
        Pair(client_cfg(credentials=creds("ed25519", "client")),
             server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust())),
    ):
        pair.run()
        for side in ("client", "server"):
            assert any(isinstance(e, HandshakeComplete) for e in pair.events[side])


# -- framing: truncated messages, trailing bytes (RFC 8446 §6.2 decode_error) ------------

# (sender, message type, setup): every message a peer parses in some handshake.
_MESSAGES = [
    ("client", HT.CLIENT_HELLO, "full"),
    ("server", HT.SERVER_HELLO, "full"),
    ("server", HT.ENCRYPTED_EXTENSIONS, "full"),
    ("server", HT.CERTIFICATE_REQUEST, "auth"),
    ("server", HT.CERTIFICATE, "full"),
    ("server", HT.CERTIFICATE_VERIFY, "full"),
    ("server", HT.FINISHED, "full"),
    ("server", HT.NEW_SESSION_TICKET, "ticket"),
    ("client", HT.CERTIFICATE, "auth"),
    ("client", HT.CERTIFICATE_VERIFY, "auth"),
    ("client", HT.FINISHED, "full"),
    ("client", HT.CLIENT_HELLO, "psk"),
    ("server", HT.SERVER_HELLO, "psk"),
]


def _setup(name: str) -> Pair:
    if name == "auth":
        return Pair(client_cfg(credentials=creds("ed25519", "client")),
                    server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust()))
    if name == "ticket":
        return Pair(client_cfg(), server_cfg(session_ticket_key=os.urandom(64)))
    if name == "psk":
        return Pair(psk_client_cfg(), psk_server_cfg())
    return Pair(client_cfg(), server_cfg())


def _ids(params):
    return [f"{s}-{HT(t).name}-{m}" for s, t, m in params]


@pytest.mark.parametrize(("sender", "msg_type", "setup"), _MESSAGES, ids=_ids(_MESSAGES))
def test_truncated_message_is_decode_error(sender, msg_type, setup) -> None:
    """The body loses its last byte and the header says so: the body itself is short."""
    receiver = "server" if sender == "client" else "client"
    fails(_setup(setup), rewrite_raw(sender, msg_type, lambda raw: frame(raw[0], raw[4:-1])), receiver,
          A.decode_error)


@pytest.mark.parametrize(("sender", "msg_type", "setup"), _MESSAGES, ids=_ids(_MESSAGES))
def test_trailing_bytes_are_decode_error(sender, msg_type, setup) -> None:
    receiver = "server" if sender == "client" else "client"
    fails(_setup(setup), rewrite_raw(sender, msg_type, lambda raw: frame(raw[0], raw[4:] + b"\x00")),
          receiver,
          A.decode_error)


@pytest.mark.parametrize("body", [b"", b"\x00"])
def test_empty_or_one_byte_client_hello_is_decode_error(body) -> None:
    fails(Pair(client_cfg(), server_cfg()),
          rewrite_raw("client", HT.CLIENT_HELLO, lambda raw: frame(1, body)),
          "server", A.decode_error)


# -- malformed extension bodies (RFC 8446 §4.2, §6.2 decode_error) -------------------------

_BAD_CLIENT_EXTENSIONS = {
    "supported_groups-odd": (ET.SUPPORTED_GROUPS, b"\x00\x03\x00\x1d\x00"),
    "supported_groups-empty": (ET.SUPPORTED_GROUPS, b"\x00\x00"),
    "supported_groups-trailing": (ET.SUPPORTED_GROUPS, b"\x00\x02\x00\x1d\x00"),
    "signature_algorithms-empty": (ET.SIGNATURE_ALGORITHMS, b"\x00\x00"),
    "alpn-empty-list": (ET.ALPN, b"\x00\x00"),
    "alpn-empty-name": (ET.ALPN, b"\x00\x01\x00"),
    "alpn-overlong-name": (ET.ALPN, b"\x00\x03\x05h3"),
    "supported_versions-odd": (ET.SUPPORTED_VERSIONS, b"\x03\x03\x04\x03"),
    "supported_versions-empty": (ET.SUPPORTED_VERSIONS, b"\x00"),
    "key_share-truncated": (ET.KEY_SHARE, b"\x00\x24\x00\x1d\x00\x20"),
    "key_share-empty-key": (ET.KEY_SHARE, b"\x00\x04\x00\x1d\x00\x00"),
    "server_name-truncated": (ET.SERVER_NAME, b"\x00\x0c\x00\x00\x09local"),
    "server_name-empty-list": (ET.SERVER_NAME, b"\x00\x00"),
    "psk_key_exchange_modes-empty": (ET.PSK_KEY_EXCHANGE_MODES, b"\x00"),
    "psk_key_exchange_modes-trailing": (ET.PSK_KEY_EXCHANGE_MODES, b"\x01\x01\x01"),
}


@pytest.mark.parametrize("case", list(_BAD_CLIENT_EXTENSIONS))
def test_malformed_client_hello_extension_is_decode_error(case) -> None:
    ext_type, body = _BAD_CLIENT_EXTENSIONS[case]
    fails(Pair(client_cfg(), server_cfg()), rewrite("client", HT.CLIENT_HELLO, set_ext(ext_type, body)),
          "server", A.decode_error)


def test_malformed_pre_shared_key_is_decode_error() -> None:
    def edit(ch):
        ch.extensions[ET.PRE_SHARED_KEY] = ch.extensions[ET.PRE_SHARED_KEY][:-1]

    fails(Pair(psk_client_cfg(), psk_server_cfg()), rewrite("client", HT.CLIENT_HELLO, edit), "server",
          A.decode_error)


_BAD_SERVER_EXTENSIONS = {
    "sh-supported_versions-3-bytes": (HT.SERVER_HELLO, ET.SUPPORTED_VERSIONS, b"\x03\x04\x00"),
    "sh-key_share-truncated": (HT.SERVER_HELLO, ET.KEY_SHARE, b"\x00\x1d\x00\x20\x01\x02"),
    "sh-key_share-trailing": (HT.SERVER_HELLO, ET.KEY_SHARE, b"\x00\x1d\x00\x01\x01\x00"),
    "ee-alpn-truncated": (HT.ENCRYPTED_EXTENSIONS, ET.ALPN, b"\x00\x04\x02h3"),
    "ee-alpn-empty": (HT.ENCRYPTED_EXTENSIONS, ET.ALPN, b"\x00\x00"),
    "ee-server_name-not-empty": (HT.ENCRYPTED_EXTENSIONS, ET.SERVER_NAME, b"\x00"),
}


@pytest.mark.parametrize("case", list(_BAD_SERVER_EXTENSIONS))
def test_malformed_server_extension_is_decode_error(case) -> None:
    msg_type, ext_type, body = _BAD_SERVER_EXTENSIONS[case]
    fails(Pair(client_cfg(), server_cfg()), rewrite("server", msg_type, set_ext(ext_type, body)),
          "client", A.decode_error)


def test_malformed_selected_psk_in_server_hello_is_decode_error() -> None:
    fails(Pair(psk_client_cfg(), psk_server_cfg()),
          rewrite("server", HT.SERVER_HELLO, set_ext(ET.PRE_SHARED_KEY, b"\x00")), "client", A.decode_error)


def test_malformed_ticket_early_data_is_decode_error() -> None:
    pair = Pair(client_cfg(), server_cfg(session_ticket_key=os.urandom(64)))
    fails(pair, rewrite("server", HT.NEW_SESSION_TICKET, set_ext(ET.EARLY_DATA, b"\xff\xff")), "client",
          A.decode_error)


# -- extension block rules (RFC 8446 §4.2, §4.2.11) ----------------------------------------


def test_duplicate_extension_in_client_hello_is_illegal_parameter() -> None:
    def dup(ch):
        pairs = list(ch.extensions.items())
        return with_extension_list(ch, pairs[:1] + pairs)

    fails(Pair(client_cfg(), server_cfg()), rewrite("client", HT.CLIENT_HELLO, dup), "server",
          A.illegal_parameter)


@pytest.mark.parametrize("msg_type", [HT.SERVER_HELLO, HT.ENCRYPTED_EXTENSIONS])
def test_duplicate_extension_from_server_is_illegal_parameter(msg_type) -> None:
    def dup(msg):
        pairs = list(msg.extensions.items())
        return with_extension_list(msg, pairs + pairs[-1:])

    fails(Pair(client_cfg(), server_cfg()), rewrite("server", msg_type, dup), "client", A.illegal_parameter)


def test_pre_shared_key_not_last_is_illegal_parameter() -> None:
    """RFC 8446 §4.2.11: servers MUST check it is last, else illegal_parameter."""

    def move_psk_first(ch):
        pairs = list(ch.extensions.items())
        return with_extension_list(ch, pairs[-1:] + pairs[:-1])

    fails(Pair(psk_client_cfg(), psk_server_cfg()), rewrite("client", HT.CLIENT_HELLO, move_psk_first),
          "server", A.illegal_parameter)


# -- message order and crypto level (RFC 8446 §4, §6.2; RFC 9001 §4.1.3) --------------------


def _reorder(order):
    return lambda msgs: [msgs[i] for i in order]


@pytest.mark.parametrize(
    "order",
    [(3, 0, 1, 2), (0, 2, 1, 3), (1, 0, 2, 3), (0, 1, 3, 2), (0, 0, 1, 2, 3), (0, 1, 1, 2, 3)],
    ids=["finished-before-ee", "cv-before-certificate", "certificate-before-ee", "finished-before-cv",
         "ee-twice", "certificate-twice"],
)
def test_server_flight_out_of_order_is_unexpected_message(order) -> None:
    """The full handshake's server flight is EE, Certificate, CertificateVerify, Finished."""
    fails(Pair(client_cfg(), server_cfg()), reflight("server", H, _reorder(order)), "client",
          A.unexpected_message)


@pytest.mark.parametrize("msg_type", [HT.CERTIFICATE, HT.CERTIFICATE_REQUEST, HT.CERTIFICATE_VERIFY])
def test_certificate_messages_in_psk_mode_are_unexpected_message(msg_type) -> None:
    """RFC 8446 §4.3.2, §4.4.2: a PSK handshake has no server authentication messages."""
    donor = Pair(client_cfg(), server_cfg(client_auth=ClientAuth.OPTIONAL, trust=trust())).run()
    extra = donor.first("server", msg_type)
    fails(Pair(psk_client_cfg(), psk_server_cfg()), reflight("server", H, lambda m: [m[0], extra, *m[1:]]),
          "client", A.unexpected_message)


def test_second_server_hello_is_unexpected_message() -> None:
    fails(Pair(client_cfg(), server_cfg()), reflight("server", INI, lambda m: [m[0], m[0]]), "client",
          A.unexpected_message)


def test_server_hello_after_the_handshake_is_unexpected_message() -> None:
    pair = Pair(client_cfg(), server_cfg()).run()
    fails_on(pair.client, INI, pair.first("server", HT.SERVER_HELLO), A.unexpected_message)


def test_second_client_hello_without_retry_is_unexpected_message() -> None:
    pair = Pair(client_cfg(), server_cfg())
    hello = {}

    def hook(who, level, data):
        if who == "client" and level == INI:
            hello["ch"] = data
        elif who == "client" and level == H:
            return [(INI, hello["ch"])]  # instead of its Finished, the client says hello again
        return None

    fails(pair, hook, "server", A.unexpected_message)


def test_client_hello_after_the_handshake_is_unexpected_message() -> None:
    pair = Pair(client_cfg(), server_cfg()).run()
    fails_on(pair.server, INI, pair.first("client", HT.CLIENT_HELLO), A.unexpected_message)


@pytest.mark.parametrize("order", [(2, 0, 1), (1, 2)], ids=["finished-first", "cv-without-certificate"])
def test_client_auth_flight_out_of_order_is_unexpected_message(order) -> None:
    pair = Pair(client_cfg(credentials=creds("ed25519", "client")),
                server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust()))
    fails(pair, reflight("client", H, _reorder(order)), "server", A.unexpected_message)


@pytest.mark.parametrize("side", ["client", "server"])
def test_unknown_handshake_type_is_unexpected_message(side) -> None:
    pair = Pair(client_cfg(), server_cfg())
    engine = pair.engine(side)
    if side == "client":
        engine.start(T)
    fails_on(engine, INI, frame(99, b"\x00\x01"), A.unexpected_message)


def test_server_hello_to_the_server_is_unexpected_message() -> None:
    donor = Pair(client_cfg(), server_cfg()).run()
    fails_on(Pair(client_cfg(), server_cfg()).server, INI, donor.first("server", HT.SERVER_HELLO),
             A.unexpected_message)


@pytest.mark.parametrize(
    ("sender", "level", "to_level"),
    [("client", INI, H), ("client", INI, APP), ("server", INI, H), ("server", H, INI), ("server", H, APP),
     ("client", H, INI), ("client", H, APP), ("server", APP, H), ("server", APP, INI)],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_message_at_the_wrong_level_is_unexpected_message(sender, level, to_level) -> None:
    """RFC 9001 §4.1.3 (table 1): each handshake message has its one encryption level."""
    pair = Pair(client_cfg(), server_cfg(session_ticket_key=os.urandom(64)))
    receiver = "server" if sender == "client" else "client"
    fails(pair, reflight(sender, level, lambda m: [(to_level, b"".join(m))]), receiver, A.unexpected_message)


@pytest.mark.parametrize("side", ["client", "server"])
def test_crypto_data_in_0rtt_is_protocol_violation(side) -> None:
    """RFC 9001 §8.3: CRYPTO frames in 0-RTT packets are a PROTOCOL_VIOLATION."""
    pair = ticket_pair(enable_early_data=True)

    def hook(who, level, data):
        return [(EARLY, data)] if who != side else None  # everything `side` receives

    fails(pair, hook, side, None, PROTOCOL_VIOLATION)


@pytest.mark.parametrize(
    ("sender", "level"), [("client", INI), ("server", INI), ("server", H), ("client", H)],
    ids=["after-client-hello", "after-server-hello", "after-server-finished", "after-client-finished"],
)
def test_data_left_at_a_level_when_keys_change_is_protocol_violation(sender, level) -> None:
    """RFC 9001 §4.1.3: unconsumed data of a previous level when the next level's keys
    arrive is a PROTOCOL_VIOLATION (RFC 8446 §5.1: messages must not span a key change,
    unexpected_message)."""

    def partial(msgs):
        last = msgs[-1]
        return [*msgs, last[:3]]  # the start of another message behind the last one

    receiver = "server" if sender == "client" else "client"
    err = fails(Pair(client_cfg(), server_cfg()), reflight(sender, level, partial), receiver, None,
                PROTOCOL_VIOLATION)
    assert err.alert == A.unexpected_message


# -- QUIC's bans: KeyUpdate (RFC 9001 §6), EndOfEarlyData (RFC 9001 §8.3) -------------------


@pytest.mark.parametrize("side", ["client", "server"])
def test_tls_key_update_after_handshake_is_0x10a(side) -> None:
    """RFC 9001 §6: a TLS KeyUpdate is a connection error 0x010a (unexpected_message)."""
    pair = Pair(client_cfg(), server_cfg()).run()
    fails_on(pair.engine(side), APP, KEY_UPDATE, A.unexpected_message, 0x10A)


def test_tls_key_update_during_handshake_is_0x10a() -> None:
    fails(Pair(client_cfg(), server_cfg()), reflight("server", H, lambda m: [KEY_UPDATE, *m]), "client",
          A.unexpected_message, 0x10A)


@pytest.mark.parametrize("mode", ["full", "0rtt"])
def test_end_of_early_data_is_protocol_violation(mode) -> None:
    """RFC 9001 §8.3: clients MUST NOT send EndOfEarlyData; it is a PROTOCOL_VIOLATION."""
    pair = ticket_pair(enable_early_data=True) if mode == "0rtt" else Pair(client_cfg(), server_cfg())
    fails(pair, reflight("client", H, lambda m: [END_OF_EARLY_DATA, *m]), "server", None, PROTOCOL_VIOLATION)


def test_end_of_early_data_after_handshake_is_protocol_violation() -> None:
    pair = Pair(client_cfg(), server_cfg()).run()
    fails_on(pair.server, H, END_OF_EARLY_DATA, None, PROTOCOL_VIOLATION)


# -- authentication: CertificateVerify, certificates, Finished ------------------------------


@pytest.mark.parametrize("kind", ["p256", "rsa", "ed25519"])
def test_bad_server_certificate_verify_is_decrypt_error(kind) -> None:
    """RFC 8446 §4.4.3: a signature that does not verify aborts with decrypt_error."""

    def edit(cv):
        cv.signature = flip_last(cv.signature)

    fails(Pair(client_cfg(), server_cfg(kind)), rewrite("server", HT.CERTIFICATE_VERIFY, edit), "client",
          A.decrypt_error)


def test_bad_client_certificate_verify_is_decrypt_error() -> None:
    def edit(cv):
        cv.signature = flip_last(cv.signature)

    pair = Pair(client_cfg(credentials=creds("p256", "client")),
                server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust()))
    fails(pair, rewrite("client", HT.CERTIFICATE_VERIFY, edit), "server", A.decrypt_error)


def test_server_signature_scheme_not_offered_is_illegal_parameter() -> None:
    """RFC 8446 §4.4.3: the server's scheme MUST be one the client offered."""

    def edit(cv):
        cv.scheme = SignatureScheme.RSA_PSS_RSAE_SHA256

    pair = Pair(client_cfg(signature_schemes=[SignatureScheme.ECDSA_SECP256R1_SHA256,
                                              SignatureScheme.ED25519]),
                server_cfg())
    fails(pair, rewrite("server", HT.CERTIFICATE_VERIFY, edit), "client", A.illegal_parameter)


def test_client_signature_scheme_not_offered_is_illegal_parameter() -> None:
    def edit(cv):
        cv.scheme = SignatureScheme.RSA_PSS_RSAE_SHA384

    pair = Pair(client_cfg(credentials=creds("p256", "client")),
                server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust(),
                           signature_schemes=[SignatureScheme.ECDSA_SECP256R1_SHA256,
                                              SignatureScheme.ED25519]))
    fails(pair, rewrite("client", HT.CERTIFICATE_VERIFY, edit), "server", A.illegal_parameter)


def test_scheme_that_does_not_fit_the_key_is_illegal_parameter() -> None:
    """RFC 8446 §4.2.3: ECDSA schemes pin the curve; a P-256 key cannot sign P-384's."""

    def edit(cv):
        cv.scheme = SignatureScheme.ECDSA_SECP384R1_SHA384

    fails(Pair(client_cfg(), server_cfg()), rewrite("server", HT.CERTIFICATE_VERIFY, edit), "client",
          A.illegal_parameter)


def _foreign_credentials(cn: str = "localhost") -> Credentials:
    key = new_key("p256")
    return Credentials([make_ca("another CA").issue(cn, key)], key)


def test_server_certificate_from_unknown_ca_is_unknown_ca() -> None:
    fails(Pair(client_cfg(), server_cfg(credentials=_foreign_credentials())), None, "client", A.unknown_ca)


def test_client_certificate_from_unknown_ca_is_unknown_ca() -> None:
    pair = Pair(client_cfg(credentials=_foreign_credentials("client")),
                server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust()))
    fails(pair, None, "server", A.unknown_ca)


@pytest.mark.parametrize("days", [400, -40], ids=["expired", "not-yet-valid"])
def test_server_certificate_out_of_validity_is_certificate_expired(days) -> None:
    """RFC 8446 §6.2: certificate_expired, 'expired or not currently valid'."""
    pair = Pair(client_cfg(), server_cfg(), T + days * 86400)
    fails(pair, None, "client", A.certificate_expired)


def test_client_certificate_expired_is_certificate_expired() -> None:
    pair = Pair(client_cfg(credentials=creds("p256", "client"), verify_peer=False),
                server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust()), T + 400 * 86400)
    fails(pair, None, "server", A.certificate_expired)


@pytest.mark.parametrize("name", ["example.com", "10.0.0.1"])
def test_wrong_server_name_is_bad_certificate(name) -> None:
    fails(Pair(client_cfg(server_name=name), server_cfg()), None, "client", A.bad_certificate)


def test_empty_server_certificate_is_decode_error() -> None:
    """RFC 8446 §4.4.2.4: an empty server Certificate MUST be answered with decode_error."""
    fails(Pair(client_cfg(), server_cfg()), rewrite("server", HT.CERTIFICATE, lambda c: Certificate(b"", [])),
          "client", A.decode_error)


def test_corrupt_server_certificate_is_bad_certificate() -> None:
    """RFC 8446 §6.2: bad_certificate, 'a certificate was corrupt'."""
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("server", HT.CERTIFICATE,
                  lambda c: Certificate(b"", [CertificateEntry(b"\x30\x03\x02\x01\x00")])),
          "client", A.bad_certificate)


def test_bad_server_finished_is_decrypt_error() -> None:
    """RFC 8446 §4.4.4: a Finished that does not verify aborts with decrypt_error."""
    fails(Pair(client_cfg(), server_cfg()), rewrite_raw("server", HT.FINISHED, flip_last), "client",
          A.decrypt_error)


@pytest.mark.parametrize("setup", ["full", "psk", "auth"])
def test_bad_client_finished_is_decrypt_error(setup) -> None:
    fails(_setup(setup), rewrite_raw("client", HT.FINISHED, flip_last), "server", A.decrypt_error)


def test_client_certificate_required_but_empty_is_certificate_required() -> None:
    """RFC 8446 §4.4.2.4: the server MAY abort with certificate_required (0x174)."""
    pair = Pair(client_cfg(), server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust()))
    fails(pair, None, "server", A.certificate_required, 0x174)


def test_certificate_request_without_signature_algorithms_is_missing_extension() -> None:
    """RFC 8446 §4.3.2: the signature_algorithms extension MUST be specified."""
    pair = Pair(client_cfg(), server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust()))
    fails(pair, rewrite("server", HT.CERTIFICATE_REQUEST, set_ext(ET.SIGNATURE_ALGORITHMS, None)), "client",
          A.missing_extension)


# -- PSKs (RFC 8446 §4.2.9, §4.2.11) --------------------------------------------------------


@pytest.mark.parametrize("kind", ["external", "ticket"])
def test_bad_psk_binder_is_decrypt_error(kind) -> None:
    """RFC 8446 §4.2.11, §6.2: a binder that does not validate aborts with decrypt_error.
    The binder is the last field of the ClientHello."""
    pair = Pair(psk_client_cfg(), psk_server_cfg()) if kind == "external" else ticket_pair()
    fails(pair, rewrite_raw("client", HT.CLIENT_HELLO, flip_last), "server", A.decrypt_error)


def test_unknown_psk_identity_at_psk_only_server_is_unknown_psk_identity() -> None:
    pair = Pair(psk_client_cfg(ExternalPsk(b"stranger", os.urandom(32))),
                psk_server_cfg(ExternalPsk(b"someone-else", os.urandom(32))))
    fails(pair, None, "server", A.unknown_psk_identity)


def test_pre_shared_key_without_psk_modes_is_missing_extension() -> None:
    """RFC 8446 §4.2.9: a pre_shared_key offer without psk_key_exchange_modes MUST abort."""
    fails(Pair(psk_client_cfg(), psk_server_cfg()),
          rewrite("client", HT.CLIENT_HELLO, set_ext(ET.PSK_KEY_EXCHANGE_MODES, None)), "server",
          A.missing_extension)


def test_selected_psk_out_of_range_is_illegal_parameter() -> None:
    """RFC 8446 §4.2.11: selected_identity outside the offered list: illegal_parameter."""
    fails(Pair(psk_client_cfg(), psk_server_cfg()),
          rewrite("server", HT.SERVER_HELLO, set_ext(ET.PRE_SHARED_KEY, ext.encode_u16(1))), "client",
          A.illegal_parameter)


def test_psk_suite_with_another_hash_is_illegal_parameter() -> None:
    """RFC 8446 §4.2.11: the suite's hash MUST be the PSK's, else illegal_parameter."""

    def edit(sh):
        sh.cipher_suite = CipherSuite.AES_256_GCM_SHA384

    pair = Pair(psk_client_cfg(), psk_server_cfg())
    fails(pair, rewrite("server", HT.SERVER_HELLO, edit), "client", A.illegal_parameter)


def test_selected_psk_without_an_offer_is_unsupported_extension() -> None:
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("server", HT.SERVER_HELLO, set_ext(ET.PRE_SHARED_KEY, ext.encode_u16(0))), "client",
          A.unsupported_extension)


# -- key exchange (RFC 8446 §4.2.8, §7.4) ---------------------------------------------------


@pytest.mark.parametrize("group", [NamedGroup.SECP256R1, NamedGroup.SECP384R1])
def test_server_share_for_another_group_is_illegal_parameter(group) -> None:
    """The client sent an X25519 share only; the server answers with another group's."""
    key = ec.generate_private_key(ec.SECP256R1() if group == NamedGroup.SECP256R1 else ec.SECP384R1())
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    pair = Pair(client_cfg(groups=[NamedGroup.X25519, NamedGroup.SECP256R1]), server_cfg())
    fails(pair,
          rewrite("server", HT.SERVER_HELLO,
                  set_ext(ET.KEY_SHARE, ext.encode_key_share_server(group, point))),
          "client", A.illegal_parameter)


_BAD_SHARES = {
    "x25519-short": (NamedGroup.X25519, lambda: x25519_public()[:31]),
    "x25519-long": (NamedGroup.X25519, lambda: x25519_public() + b"\x00"),
    "x25519-all-zero": (NamedGroup.X25519, lambda: bytes(32)),
    "x25519-order-one": (NamedGroup.X25519, lambda: b"\x01" + bytes(31)),
    "p256-off-curve": (NamedGroup.SECP256R1, lambda: off_curve(p256_public())),
    "p256-compressed": (NamedGroup.SECP256R1, lambda: b"\x02" + p256_public()[1:33]),
    "p256-wrong-form": (NamedGroup.SECP256R1, lambda: b"\x05" + p256_public()[1:]),
    "p256-short": (NamedGroup.SECP256R1, lambda: p256_public()[:-1]),
    "hybrid-short": (NamedGroup.X25519MLKEM768, lambda: bytes(100)),
}


@pytest.mark.parametrize("case", list(_BAD_SHARES))
def test_invalid_client_key_share_is_illegal_parameter(case) -> None:
    group, make = _BAD_SHARES[case]
    pair = Pair(client_cfg(groups=[group]), server_cfg())
    fails(pair,
          rewrite("client", HT.CLIENT_HELLO,
                  set_ext(ET.KEY_SHARE, ext.encode_key_share_client([(group, make())]))),
          "server", A.illegal_parameter)


@pytest.mark.parametrize("case", list(_BAD_SHARES))
def test_invalid_server_key_share_is_illegal_parameter(case) -> None:
    group, make = _BAD_SHARES[case]
    pair = Pair(client_cfg(groups=[group]), server_cfg())
    fails(pair,
          rewrite("server", HT.SERVER_HELLO,
                  set_ext(ET.KEY_SHARE, ext.encode_key_share_server(group, make()))),
          "client", A.illegal_parameter)


def test_key_share_for_a_group_not_in_supported_groups_is_illegal_parameter() -> None:
    """RFC 8446 §4.2.8: servers MAY check this and abort with illegal_parameter."""
    pair = Pair(client_cfg(groups=[NamedGroup.X25519]), server_cfg())
    shares = [(NamedGroup.X25519, x25519_public()), (NamedGroup.SECP256R1, p256_public())]
    fails(pair,
          rewrite("client", HT.CLIENT_HELLO, set_ext(ET.KEY_SHARE, ext.encode_key_share_client(shares))),
          "server", A.illegal_parameter)


def test_two_key_shares_for_one_group_is_illegal_parameter() -> None:
    """RFC 8446 §4.2.8: servers MAY check this and abort with illegal_parameter."""
    shares = [(NamedGroup.X25519, x25519_public()), (NamedGroup.X25519, x25519_public())]
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("client", HT.CLIENT_HELLO, set_ext(ET.KEY_SHARE, ext.encode_key_share_client(shares))),
          "server", A.illegal_parameter)


@pytest.mark.parametrize("missing",
                         [[ET.KEY_SHARE], [ET.SUPPORTED_GROUPS], [ET.SUPPORTED_GROUPS, ET.KEY_SHARE],
                                     [ET.SIGNATURE_ALGORITHMS]],
                         ids=["key_share", "supported_groups", "both", "signature_algorithms"])
def test_client_hello_missing_a_mandatory_extension_is_missing_extension(missing) -> None:
    """RFC 8446 §9.2: a non-PSK ClientHello needs signature_algorithms, supported_groups
    and key_share; the server MUST abort with missing_extension otherwise."""

    def edit(ch):
        for ext_type in missing:
            del ch.extensions[ext_type]

    fails(Pair(client_cfg(), server_cfg()), rewrite("client", HT.CLIENT_HELLO, edit), "server",
          A.missing_extension)


# -- versions (RFC 8446 §4.1.3, §4.2.1) -----------------------------------------------------


@pytest.mark.parametrize("sentinel", [DOWNGRADE_TLS12, DOWNGRADE_TLS11], ids=["tls12", "tls11"])
def test_downgrade_sentinel_is_illegal_parameter(sentinel) -> None:
    def edit(sh):
        del sh.extensions[ET.SUPPORTED_VERSIONS]
        sh.random = sh.random[:24] + sentinel

    fails(Pair(client_cfg(), server_cfg()), rewrite("server", HT.SERVER_HELLO, edit), "client",
          A.illegal_parameter)


def test_server_hello_without_supported_versions_is_protocol_version() -> None:
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("server", HT.SERVER_HELLO, set_ext(ET.SUPPORTED_VERSIONS, None)), "client",
          A.protocol_version)


@pytest.mark.parametrize("version", [0x0303, 0x7F1C])
def test_server_selecting_a_version_not_offered_is_illegal_parameter(version) -> None:
    """RFC 8446 §4.2.1: a version not offered or before TLS 1.3: illegal_parameter."""
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("server", HT.SERVER_HELLO, set_ext(ET.SUPPORTED_VERSIONS, ext.encode_u16(version))),
          "client",
          A.illegal_parameter)


@pytest.mark.parametrize("versions", [[0x0303], [0x0302, 0x0303], None], ids=["tls12", "tls11-12", "absent"])
def test_client_not_offering_tls13_is_protocol_version(versions) -> None:
    body = None if versions is None else ext.encode_supported_versions_client(versions)
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("client", HT.CLIENT_HELLO, set_ext(ET.SUPPORTED_VERSIONS, body)),
          "server", A.protocol_version)


# -- QUIC transport parameters (RFC 9001 §8.2) and ALPN (RFC 9001 §8.1, RFC 7301) ------------


def test_client_hello_without_transport_parameters_is_missing_extension() -> None:
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("client", HT.CLIENT_HELLO, set_ext(ET.QUIC_TRANSPORT_PARAMETERS, None)), "server",
          A.missing_extension, 0x16D)


def test_encrypted_extensions_without_transport_parameters_is_missing_extension() -> None:
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("server", HT.ENCRYPTED_EXTENSIONS, set_ext(ET.QUIC_TRANSPORT_PARAMETERS, None)), "client",
          A.missing_extension, 0x16D)


def test_no_alpn_overlap_is_no_application_protocol() -> None:
    fails(Pair(client_cfg(alpn_protocols=[b"smb", b"h3-29"]), server_cfg()), None, "server",
          A.no_application_protocol, 0x178)


def test_client_hello_without_alpn_is_no_application_protocol() -> None:
    fails(Pair(client_cfg(), server_cfg()), rewrite("client", HT.CLIENT_HELLO, set_ext(ET.ALPN, None)),
          "server",
          A.no_application_protocol, 0x178)


def test_server_selecting_no_alpn_is_no_application_protocol() -> None:
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("server", HT.ENCRYPTED_EXTENSIONS, set_ext(ET.ALPN, None)),
          "client", A.no_application_protocol, 0x178)


@pytest.mark.parametrize("protocols", [[b"smb"], [b"h3", b"h3"], [b"h3", b"smb"]],
                         ids=["not-offered", "two", "two-mixed"])
def test_server_selecting_an_alpn_not_offered_is_illegal_parameter(protocols) -> None:
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("server", HT.ENCRYPTED_EXTENSIONS, set_ext(ET.ALPN, ext.encode_alpn(protocols))), "client",
          A.illegal_parameter)


# -- legacy fields (RFC 8446 §4.1.2, §4.1.3; RFC 9001 §8.4) ---------------------------------


@pytest.mark.parametrize("length", [1, 32])
def test_legacy_session_id_is_protocol_violation(length) -> None:
    """RFC 9001 §8.4: a server MUST treat a non-empty legacy_session_id as a
    connection error of type PROTOCOL_VIOLATION."""

    def edit(ch):
        ch.legacy_session_id = os.urandom(length)

    fails(Pair(client_cfg(), server_cfg()), rewrite("client", HT.CLIENT_HELLO, edit), "server", None,
          PROTOCOL_VIOLATION)


@pytest.mark.parametrize("methods", [b"\x01", b"\x00\x01", b"\x01\x00"])
def test_legacy_compression_methods_not_null_is_illegal_parameter(methods) -> None:
    def edit(ch):
        ch.legacy_compression_methods = methods

    fails(Pair(client_cfg(), server_cfg()), rewrite("client", HT.CLIENT_HELLO, edit), "server",
          A.illegal_parameter)


def test_session_id_echo_mismatch_is_illegal_parameter() -> None:
    """RFC 8446 §4.1.3: an echo that differs from what the client sent: illegal_parameter."""

    def edit(sh):
        sh.legacy_session_id_echo = b"\x01" * 32

    fails(Pair(client_cfg(), server_cfg()), rewrite("server", HT.SERVER_HELLO, edit), "client",
          A.illegal_parameter)


def test_server_hello_compression_not_null_is_illegal_parameter() -> None:
    def edit(sh):
        sh.legacy_compression_method = 1

    fails(Pair(client_cfg(), server_cfg()), rewrite("server", HT.SERVER_HELLO, edit), "client",
          A.illegal_parameter)


def test_server_cipher_suite_not_offered_is_illegal_parameter() -> None:
    """RFC 8446 §4.1.3: a cipher suite that was not offered: illegal_parameter."""

    def edit(sh):
        sh.cipher_suite = CipherSuite.CHACHA20_POLY1305_SHA256

    fails(Pair(client_cfg(cipher_suites=[CipherSuite.AES_128_GCM_SHA256]), server_cfg()),
          rewrite("server", HT.SERVER_HELLO, edit), "client", A.illegal_parameter)


# -- HelloRetryRequest (RFC 8446 §4.1.2, §4.1.4, §4.2.8) ------------------------------------


def test_second_hello_retry_request_is_unexpected_message() -> None:
    """RFC 8446 §4.1.4: a second HelloRetryRequest MUST be answered with unexpected_message."""
    seen: list[bytes] = []

    def hook(who, level, data):
        if who == "server" and level == INI:
            seen.append(data)
            if len(seen) == 2:
                return seen[0]  # the retry again instead of the ServerHello
        return None

    fails(hrr_pair(), hook, "client", A.unexpected_message)


@pytest.mark.parametrize("group", [NamedGroup.X25519, NamedGroup.SECP384R1],
                         ids=["already-sent", "not-offered"])
def test_retry_for_a_group_already_sent_or_not_offered_is_illegal_parameter(group) -> None:
    """RFC 8446 §4.2.8: the selected_group MUST be offered in supported_groups and MUST
    NOT be one the client already sent a share for."""
    fails(hrr_pair(), rewrite("server", HT.SERVER_HELLO, set_ext(ET.KEY_SHARE, ext.encode_u16(group))),
          "client",
          A.illegal_parameter)


def test_retry_that_changes_nothing_is_illegal_parameter() -> None:
    """RFC 8446 §4.1.4: a HelloRetryRequest that would not change the ClientHello."""

    def edit(hrr):
        del hrr.extensions[ET.KEY_SHARE]
        del hrr.extensions[ET.COOKIE]

    fails(hrr_pair(), rewrite("server", HT.SERVER_HELLO, edit), "client", A.illegal_parameter)


def test_retry_with_a_cipher_suite_not_offered_is_illegal_parameter() -> None:
    def edit(hrr):
        hrr.cipher_suite = CipherSuite.AES_256_GCM_SHA384

    fails(hrr_pair(cipher_suites=[CipherSuite.AES_128_GCM_SHA256]), rewrite("server", HT.SERVER_HELLO, edit),
          "client", A.illegal_parameter)


def test_server_hello_suite_differing_from_the_retry_is_illegal_parameter() -> None:
    """RFC 8446 §4.1.4: the ServerHello's suite MUST be the HelloRetryRequest's."""

    def edit(sh):
        sh.cipher_suite = CipherSuite.AES_256_GCM_SHA384

    fails(hrr_pair(), rewrite("server", HT.SERVER_HELLO, edit, nth=1), "client", A.illegal_parameter)


def test_server_hello_group_differing_from_the_retry_is_illegal_parameter() -> None:
    """RFC 8446 §4.2.8: after a retry the ServerHello's group MUST be the one asked for."""
    share = ext.encode_key_share_server(NamedGroup.X25519, x25519_public())
    fails(hrr_pair(), rewrite("server", HT.SERVER_HELLO, set_ext(ET.KEY_SHARE, share), nth=1), "client",
          A.illegal_parameter)


@pytest.mark.parametrize(("ext_type", "alert"),
                         [(ET.EARLY_DATA, A.unsupported_extension), (ET.ALPN, A.illegal_parameter)],
                         ids=["unsolicited", "not-allowed"])
def test_retry_with_a_foreign_extension(ext_type, alert) -> None:
    """RFC 8446 §4.2: unsolicited: unsupported_extension; not for this message: illegal_parameter."""
    fails(hrr_pair(), rewrite("server", HT.SERVER_HELLO, set_ext(ext_type, b"")), "client", alert)


def test_second_client_hello_without_the_cookie_is_illegal_parameter() -> None:
    fails(hrr_pair(), rewrite("client", HT.CLIENT_HELLO, set_ext(ET.COOKIE, None), nth=1), "server",
          A.illegal_parameter)


def test_second_client_hello_with_a_wrong_cookie_is_illegal_parameter() -> None:
    fails(hrr_pair(),
          rewrite("client", HT.CLIENT_HELLO, set_ext(ET.COOKIE, ext.encode_cookie(b"x" * 32)), nth=1),
          "server", A.illegal_parameter)


@pytest.mark.parametrize("shares", ["x25519", "both", "none"])
def test_second_client_hello_with_the_wrong_share_is_illegal_parameter(shares) -> None:
    """The retry asked for P-256: the second hello must carry exactly that one share."""
    entries = {
        "x25519": [(NamedGroup.X25519, x25519_public())],
        "both": [(NamedGroup.X25519, x25519_public()), (NamedGroup.SECP256R1, p256_public())],
        "none": [],
    }[shares]
    fails(hrr_pair(),
          rewrite("client", HT.CLIENT_HELLO, set_ext(ET.KEY_SHARE, ext.encode_key_share_client(entries)),
                              nth=1), "server", A.illegal_parameter)


def test_second_client_hello_with_another_random_is_illegal_parameter() -> None:
    """RFC 8446 §4.1.2: the second ClientHello repeats the first but for the retry's asks."""

    def edit(ch):
        ch.random = os.urandom(32)

    fails(hrr_pair(), rewrite("client", HT.CLIENT_HELLO, edit, nth=1), "server", A.illegal_parameter)


# -- unsolicited and misplaced extensions (RFC 8446 §4.2) -----------------------------------


@pytest.mark.parametrize(
    ("msg_type", "ext_type"),
    [(HT.SERVER_HELLO, ET.EARLY_DATA), (HT.SERVER_HELLO, 0xFF01), (HT.SERVER_HELLO, ET.RECORD_SIZE_LIMIT),
     (HT.ENCRYPTED_EXTENSIONS, ET.EARLY_DATA), (HT.ENCRYPTED_EXTENSIONS, ET.RECORD_SIZE_LIMIT),
     (HT.ENCRYPTED_EXTENSIONS, 0x7A7A)],
    ids=["sh-early_data", "sh-renegotiation_info", "sh-record_size_limit", "ee-early_data",
         "ee-record_size_limit", "ee-unknown"],
)
def test_unsolicited_server_extension_is_unsupported_extension(msg_type, ext_type) -> None:
    """An extension response the client did not ask for: unsupported_extension (0x16e)."""
    fails(Pair(client_cfg(), server_cfg()), rewrite("server", msg_type, set_ext(ext_type, b"")), "client",
          A.unsupported_extension, 0x16E)


@pytest.mark.parametrize(
    ("msg_type", "ext_type", "body"),
    [(HT.SERVER_HELLO, ET.ALPN, ext.encode_alpn([b"h3"])), (HT.SERVER_HELLO, ET.SERVER_NAME, b""),
     (HT.ENCRYPTED_EXTENSIONS, ET.KEY_SHARE, b""),
     (HT.ENCRYPTED_EXTENSIONS, ET.SUPPORTED_VERSIONS, b"\x03\x04"),
     (HT.ENCRYPTED_EXTENSIONS, ET.SIGNATURE_ALGORITHMS, b"\x00\x02\x04\x03")],
    ids=["sh-alpn", "sh-server_name", "ee-key_share", "ee-supported_versions", "ee-signature_algorithms"],
)
def test_extension_not_allowed_in_the_message_is_illegal_parameter(msg_type, ext_type, body) -> None:
    """RFC 8446 §4.2: a recognised extension in a message it is not specified for."""
    fails(Pair(client_cfg(), server_cfg()), rewrite("server", msg_type, set_ext(ext_type, body)), "client",
          A.illegal_parameter)


# -- NewSessionTicket (RFC 8446 §4.6.1, RFC 9001 §4.6.1) ------------------------------------


@pytest.mark.parametrize("size", [0, 1, 0xFFFFFFFE])
def test_ticket_max_early_data_not_all_ones_is_protocol_violation(size) -> None:
    pair = Pair(client_cfg(), server_cfg(session_ticket_key=os.urandom(64)))
    fails(pair, rewrite("server", HT.NEW_SESSION_TICKET, set_ext(ET.EARLY_DATA, size.to_bytes(4, "big"))),
          "client", None, PROTOCOL_VIOLATION)


def test_ticket_lifetime_over_seven_days_is_illegal_parameter() -> None:
    def edit(nst):
        nst.lifetime = 7 * 24 * 3600 + 1

    pair = Pair(client_cfg(), server_cfg(session_ticket_key=os.urandom(64)))
    fails(pair, rewrite("server", HT.NEW_SESSION_TICKET, edit), "client", A.illegal_parameter)


def test_ticket_lifetime_of_exactly_seven_days_is_accepted() -> None:
    def edit(nst):
        nst.lifetime = 7 * 24 * 3600

    pair = Pair(client_cfg(), server_cfg(session_ticket_key=os.urandom(64))).run(
        rewrite("server", HT.NEW_SESSION_TICKET, edit))
    assert pair.session is not None and pair.session.lifetime == 7 * 24 * 3600


# -- nothing in common (RFC 8446 §4.1.1) ----------------------------------------------------


def test_no_common_cipher_suite_is_handshake_failure() -> None:
    fails(Pair(client_cfg(cipher_suites=[CipherSuite.AES_128_GCM_SHA256]),
               server_cfg(cipher_suites=[CipherSuite.AES_256_GCM_SHA384])), None, "server",
               A.handshake_failure)


def test_no_common_group_is_handshake_failure() -> None:
    fails(Pair(client_cfg(groups=[NamedGroup.X25519]), server_cfg(groups=[NamedGroup.SECP384R1])), None,
          "server",
          A.handshake_failure)


def test_no_common_signature_scheme_is_handshake_failure() -> None:
    fails(Pair(client_cfg(signature_schemes=[SignatureScheme.ED25519]), server_cfg("p256")), None, "server",
          A.handshake_failure)


# -- the fail-once discipline ------------------------------------------------------------------


def test_failed_engine_keeps_failing_with_the_same_error_and_no_events() -> None:
    pair = Pair(client_cfg(), server_cfg())
    with pytest.raises(TlsError) as info:
        pair.run(rewrite_raw("server", HT.FINISHED, flip_last))
    client = pair.client
    assert client.failed is info.value
    # Even the message that would have been valid is refused with the first error.
    for level, data in ((H, b""), (H, pair.first("server", HT.FINISHED)), (APP, b"\x04\x00\x00")):
        with pytest.raises(TlsError) as again:
            client.receive(level, data, T)
        assert again.value is info.value
    assert not client.handshake_complete


# -- more key exchange and signature rules ---------------------------------------------------


def test_invalid_mlkem_encapsulation_key_is_illegal_parameter() -> None:
    """draft-ietf-tls-ecdhe-mlkem / FIPS 203 §7.2: the encapsulation key check fails for
    coefficients that are not reduced mod q (all 0xff bytes)."""
    share = b"\xff" * 1184 + x25519_public()
    pair = Pair(client_cfg(groups=[NamedGroup.X25519MLKEM768]), server_cfg())
    fails(pair, rewrite("client", HT.CLIENT_HELLO, set_ext(
        ET.KEY_SHARE, ext.encode_key_share_client([(NamedGroup.X25519MLKEM768, share)]))), "server",
        A.illegal_parameter)


def test_rsa_pkcs1_certificate_verify_is_illegal_parameter() -> None:
    """RFC 8446 §4.4.3: RSA signatures MUST use RSASSA-PSS, even when the client lists a
    PKCS#1 v1.5 scheme (which only applies to certificates)."""

    def edit(cv):
        cv.scheme = SignatureScheme.RSA_PKCS1_SHA256

    schemes = [SignatureScheme.RSA_PKCS1_SHA256, SignatureScheme.RSA_PSS_RSAE_SHA256]
    fails(Pair(client_cfg(signature_schemes=schemes), server_cfg("rsa")),
          rewrite("server", HT.CERTIFICATE_VERIFY, edit), "client", A.illegal_parameter)


def test_early_data_in_the_second_client_hello_is_illegal_parameter() -> None:
    """RFC 8446 §4.2.10: a client MUST NOT include early_data in its followup ClientHello."""
    fails(hrr_pair(), rewrite("client", HT.CLIENT_HELLO, set_ext(ET.EARLY_DATA, b""), nth=1), "server",
          A.illegal_parameter)


def test_two_host_names_are_illegal_parameter() -> None:
    """RFC 6066 §3: the list MUST NOT hold more than one name of a type."""
    entry = b"\x00\x00\x09localhost"
    body = len(entry * 2).to_bytes(2, "big") + entry * 2
    fails(Pair(client_cfg(), server_cfg()), rewrite("client", HT.CLIENT_HELLO, set_ext(ET.SERVER_NAME, body)),
          "server", A.illegal_parameter)


# -- extension placement (RFC 8446 §4.2, §4.4.2) ------------------------------------------


def test_unsolicited_extension_in_server_certificate_entry_is_unsupported_extension() -> None:
    def edit(cert):
        cert.entries[0].extensions[ET.STATUS_REQUEST] = b"\x01\x00\x00\x00"

    fails(Pair(client_cfg(), server_cfg()), rewrite("server", HT.CERTIFICATE, edit), "client",
          A.unsupported_extension)


def test_unsolicited_extension_in_client_certificate_entry_is_unsupported_extension() -> None:
    def edit(cert):
        cert.entries[0].extensions[ET.SIGNED_CERTIFICATE_TIMESTAMP] = b"\x00\x00"

    pair = Pair(client_cfg(credentials=creds("p256", "client")),
                server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust()))
    fails(pair, rewrite("client", HT.CERTIFICATE, edit), "server", A.unsupported_extension)


def test_key_share_in_certificate_request_is_illegal_parameter() -> None:
    pair = Pair(client_cfg(), server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust()))
    fails(pair, rewrite("server", HT.CERTIFICATE_REQUEST, set_ext(ET.KEY_SHARE, b"\x00\x1d")), "client",
          A.illegal_parameter)


def test_key_share_in_new_session_ticket_is_illegal_parameter() -> None:
    pair = Pair(client_cfg(), server_cfg(session_ticket_key=os.urandom(64)))
    fails(pair, rewrite("server", HT.NEW_SESSION_TICKET, set_ext(ET.KEY_SHARE, b"\x00\x1d")), "client",
          A.illegal_parameter)


def test_oid_filters_in_client_hello_is_illegal_parameter() -> None:
    fails(Pair(client_cfg(), server_cfg()),
          rewrite("client", HT.CLIENT_HELLO, set_ext(ET.OID_FILTERS, b"\x00\x00")),
          "server", A.illegal_parameter)


# -- peer input that once surfaced as internal_error ------------------------------------------


def test_retry_cookie_too_large_to_echo_is_illegal_parameter() -> None:
    """A cookie<1..2^16-1> that fits the HelloRetryRequest but not the second ClientHello's
    16-bit extension block used to overflow the encoder (internal_error)."""
    fails(hrr_pair(), rewrite("server", HT.SERVER_HELLO, set_ext(ET.COOKIE, ext.encode_cookie(b"c" * 65400))),
          "client", A.illegal_parameter)


def test_host_name_over_255_bytes_is_unrecognized_name() -> None:
    """RFC 6066 §3 (and RFC 1035's 255-octet limit): such a name used to pass and then
    overflow the session ticket's 8-bit length at the end of the handshake (internal_error)."""
    name = ".".join(["a" * 60] * 5)
    pair = Pair(client_cfg(server_name=name, verify_peer=False),
                server_cfg(session_ticket_key=os.urandom(64)))
    fails(pair, None, "server", A.unrecognized_name, 0x170)


def _edit_certificate(replace_from: bytes, replace_to: bytes):
    """A rewrite() editor that patches the leaf's DER (the patch must apply)."""

    def edit(cert):
        der = cert.entries[0].cert_data
        assert replace_from in der
        cert.entries[0].cert_data = der.replace(replace_from, replace_to, 1)

    return edit


ED25519_OID = b"\x06\x03\x2b\x65\x70"  # 1.3.101.112
X509_V3 = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT version v3


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
def test_certificate_with_an_unknown_key_type_is_unsupported_certificate(verify) -> None:
    """RFC 8446 §6.2: unsupported_certificate; cryptography's UnsupportedAlgorithm from
    public_key() used to surface as internal_error (in CertificateVerify when unverified)."""
    fails(Pair(client_cfg(verify_peer=verify), server_cfg("ed25519")),
          rewrite("server", HT.CERTIFICATE, _edit_certificate(ED25519_OID, b"\x06\x03\x2b\x65\x7f")),
          "client",
          A.unsupported_certificate)


@pytest.mark.parametrize("sender", ["server", "client"])
def test_certificate_with_an_invalid_version_is_bad_certificate(sender) -> None:
    """cryptography's InvalidVersion (not a ValueError) used to surface as internal_error."""
    pair = Pair(client_cfg(credentials=creds("ed25519", "client")),
                server_cfg("ed25519", client_auth=ClientAuth.REQUIRED, trust=trust()))
    receiver = "client" if sender == "server" else "server"
    fails(pair, rewrite(sender, HT.CERTIFICATE, _edit_certificate(X509_V3, b"\xa0\x03\x02\x01\x09")),
          receiver,
          A.bad_certificate)


def test_certificate_with_an_invalid_ec_point_is_bad_certificate() -> None:
    """An unverified peer's P-256 key that is no point: ValueError from public_key() used
    to surface in CertificateVerify as internal_error."""
    fails(Pair(client_cfg(verify_peer=False), server_cfg("p256")),
          rewrite("server", HT.CERTIFICATE, _edit_certificate(b"\x03\x42\x00\x04", b"\x03\x42\x00\x05")),
          "client",
          A.bad_certificate)


def test_certificate_with_a_malformed_name_is_bad_certificate() -> None:
    """The verifier parses names lazily: invalid UTF-8 in the subject (with an unknown
    critical extension, so the name is reached first) raised ValueError from verify()."""

    def edit(cert):
        der = cert.entries[0].cert_data
        der = der.replace(b"\x0c\x09localhost", b"\x0c\x09l\xbfcalhost", 1)
        cert.entries[0].cert_data = der.replace(b"\x06\x03\x55\x1d\x13", b"\x06\x03\x55\x1d\x5e", 1)

    fails(Pair(client_cfg(), server_cfg("ed25519")), rewrite("server", HT.CERTIFICATE, edit), "client",
          A.bad_certificate)
