"""PSK key exchange modes (RFC 8446 §4.2.9): psk_dhe_ke and psk_ke, engine to engine.

tlshd's QUIC path offers and accepts psk_ke only (its GnuTLS priority has +PSK but no
+ECDHE-PSK), so external PSKs and resumption with tlshd need psk_ke: no key_share in the
ServerHello and a handshake secret from zeros (RFC 8446 §7.1). RFC 8448 has no psk_ke
trace, so the psk_ke key schedule is checked here against a derivation written out from
§7.1 with the standard library's HMAC; aioquic has no psk_ke (tests/interop).
"""
from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from quichsd.tls import extensions as ext
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import ExternalPsk, TlsConfig
from quichsd.tls.constants import (
    AlertDescription as A,
)
from quichsd.tls.constants import (
    CryptoLevel,
    Direction,
    NamedGroup,
)
from quichsd.tls.constants import (
    ExtensionType as ET,
)
from quichsd.tls.constants import (
    HandshakeType as HT,
)
from quichsd.tls.constants import (
    PskKeyExchangeMode as M,
)
from quichsd.tls.errors import TlsError
from quichsd.tls.events import HandshakeComplete, InstallSecret, SendHandshake
from quichsd.tls.keyschedule import KeySchedule, finished_verify_data
from quichsd.tls.messages import decode_message
from quichsd.tls.server import ServerEngine
from quichsd.tls.suites import SUITES
from tests.tls_tamper import PSK, Pair, T, client_cfg, psk_client_cfg, psk_server_cfg, rewrite, server_cfg

KE, DHE = (M.PSK_KE,), (M.PSK_DHE_KE,)
BOTH = (M.PSK_DHE_KE, M.PSK_KE)
INI, H = CryptoLevel.INITIAL, CryptoLevel.HANDSHAKE


def complete(pair: Pair, side: str) -> HandshakeComplete:
    (done,) = [e for e in pair.events[side] if isinstance(e, HandshakeComplete)]
    return done


def hello(pair: Pair, sender: str, msg_type: int):
    return decode_message(pair.first(sender, msg_type))


def secrets(pair: Pair, side: str) -> dict:
    return {(int(e.level), int(e.direction)): e.secret
            for e in pair.events[side] if isinstance(e, InstallSecret)}


def check_mirrored(pair: Pair) -> None:
    c, s = secrets(pair, "client"), secrets(pair, "server")
    for (level, direction), secret in c.items():
        if (level, 1 - direction) in s:
            assert s[(level, 1 - direction)] == secret
    assert (int(CryptoLevel.APP), 0) in c and (int(CryptoLevel.APP), 1) in s


def check_mode(pair: Pair, mode: M) -> None:
    """The handshake completed in `mode`: key_share in the ServerHello iff psk_dhe_ke."""
    sh = hello(pair, "server", HT.SERVER_HELLO)
    assert ET.PRE_SHARED_KEY in sh.extensions
    assert (ET.KEY_SHARE in sh.extensions) is (mode == M.PSK_DHE_KE)
    for side in ("client", "server"):
        done = complete(pair, side)
        assert (done.group is None) is (mode == M.PSK_KE), (side, done.group)
    check_mirrored(pair)


def offered_modes(pair: Pair) -> list[int]:
    return ext.decode_psk_modes(hello(pair, "client", HT.CLIENT_HELLO).extensions[ET.PSK_KEY_EXCHANGE_MODES])


# -- RFC 8446 §7.1 written out, for psk_ke ------------------------------------------------


def _expand_label(secret: bytes, label: bytes, context: bytes, length: int = 32) -> bytes:
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + bytes((len(context),)) + context
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes((i,)), hashlib.sha256).digest()
        out, i = out + block, i + 1
    return out[:length]


def psk_ke_handshake_secrets(psk: bytes, client_hello: bytes, server_hello: bytes) -> tuple[bytes, bytes]:
    early = hmac.new(bytes(32), psk, hashlib.sha256).digest()
    derived = _expand_label(early, b"derived", hashlib.sha256(b"").digest())
    handshake = hmac.new(derived, bytes(32), hashlib.sha256).digest()  # (EC)DHE input: zeros
    th = hashlib.sha256(client_hello + server_hello).digest()
    return _expand_label(handshake, b"c hs traffic", th), _expand_label(handshake, b"s hs traffic", th)


# -- external PSKs ------------------------------------------------------------------------


def test_client_offers_both_modes_dhe_first_by_default() -> None:
    pair = Pair(psk_client_cfg(), psk_server_cfg()).run()
    assert offered_modes(pair) == [M.PSK_DHE_KE, M.PSK_KE]
    check_mode(pair, M.PSK_DHE_KE)  # the server prefers psk_dhe_ke


@pytest.mark.parametrize(("client_modes", "server_modes", "mode"), [
    (BOTH, BOTH, M.PSK_DHE_KE),
    (DHE, BOTH, M.PSK_DHE_KE),
    (BOTH, DHE, M.PSK_DHE_KE),
    (KE, BOTH, M.PSK_KE),
    (BOTH, KE, M.PSK_KE),
    (KE, KE, M.PSK_KE),
    ((M.PSK_KE, M.PSK_DHE_KE), (M.PSK_KE, M.PSK_DHE_KE), M.PSK_DHE_KE),  # order given does not matter
], ids=["both-both", "dhe-both", "both-dhe", "ke-both", "both-ke", "ke-ke", "order"])
def test_external_psk_in_each_mode(client_modes, server_modes, mode) -> None:
    pair = Pair(psk_client_cfg(psk_modes=client_modes), psk_server_cfg(psk_modes=server_modes)).run()
    check_mode(pair, mode)
    assert complete(pair, "server").psk_identity == PSK.identity
    assert complete(pair, "client").psk_identity == PSK.identity


def test_psk_ke_key_schedule_is_rfc_8446_with_zero_ikm() -> None:
    pair = Pair(psk_client_cfg(psk_modes=KE), psk_server_cfg()).run()
    check_mode(pair, M.PSK_KE)
    client_hs, server_hs = psk_ke_handshake_secrets(
        PSK.key, pair.first("client", HT.CLIENT_HELLO), pair.first("server", HT.SERVER_HELLO))
    got = secrets(pair, "client")
    assert got[(int(H), int(Direction.SEND))] == client_hs
    assert got[(int(H), int(Direction.RECV))] == server_hs


def test_psk_ke_server_ignores_the_client_key_share_and_needs_no_retry() -> None:
    """The client's share is for a group the server does not take: with psk_dhe_ke that
    would be a HelloRetryRequest; with psk_ke the share is not needed at all."""
    groups = [NamedGroup.SECP384R1, NamedGroup.X25519]
    pair = Pair(psk_client_cfg(psk_modes=KE, groups=groups), psk_server_cfg(groups=[NamedGroup.X25519])).run()
    check_mode(pair, M.PSK_KE)
    assert [d for who, level, d in pair.sent if who == "server" and level == INI] == \
        [pair.first("server", HT.SERVER_HELLO)]  # one ServerHello, no retry
    retried = Pair(psk_client_cfg(psk_modes=DHE, groups=groups),
                   psk_server_cfg(groups=[NamedGroup.X25519])).run()
    assert sum(1 for who, level, _ in retried.sent if who == "server" and level == INI) == 2
    assert complete(retried, "client").group == complete(retried, "server").group == NamedGroup.X25519


def test_sha384_psk_in_psk_ke() -> None:
    psk = ExternalPsk(b"nvme-sha384", os.urandom(48), "sha384")
    pair = Pair(psk_client_cfg(psk, psk_modes=KE), psk_server_cfg(psk)).run()
    check_mode(pair, M.PSK_KE)


# -- resumption ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [M.PSK_KE, M.PSK_DHE_KE], ids=["psk_ke", "psk_dhe_ke"])
def test_resumption_and_0rtt_in_each_mode(mode) -> None:
    key = os.urandom(64)
    first = Pair(client_cfg(psk_modes=(mode,)),
                 server_cfg(session_ticket_key=key, enable_early_data=True)).run()
    assert first.session is not None, "a ticket for a client that offered only this mode"
    pair = Pair(client_cfg(psk_modes=(mode,), session=first.session, enable_early_data=True),
                server_cfg(session_ticket_key=key, enable_early_data=True), T + 5).run()
    check_mode(pair, mode)
    for side in ("client", "server"):
        done = complete(pair, side)
        assert done.resumed and done.early_data_accepted
    assert pair.session is not None  # a new ticket after a resumed psk_ke handshake too


def test_resumption_with_psk_ke_server() -> None:
    """A server that takes only psk_ke (as tlshd) resumes a default client in psk_ke."""
    key = os.urandom(64)
    server = server_cfg(session_ticket_key=key, psk_modes=KE)
    first = Pair(client_cfg(), server).run()
    assert complete(first, "client").group is not None  # the full handshake does (EC)DHE
    pair = Pair(client_cfg(session=first.session), server, T + 5).run()
    check_mode(pair, M.PSK_KE)
    assert complete(pair, "client").resumed


# -- no mode in common: RFC 8446 §4.2.9 --------------------------------------------------


def test_dhe_only_server_falls_back_to_a_full_handshake_for_a_psk_ke_client() -> None:
    key = os.urandom(64)
    first = Pair(client_cfg(psk_modes=KE), server_cfg(session_ticket_key=key)).run()
    server = server_cfg(session_ticket_key=key, psk_modes=DHE)
    pair = Pair(client_cfg(psk_modes=KE, session=first.session), server).run()
    sh = hello(pair, "server", HT.SERVER_HELLO)
    assert ET.PRE_SHARED_KEY not in sh.extensions and ET.KEY_SHARE in sh.extensions
    done = complete(pair, "client")
    assert not done.resumed and done.peer_certificates and done.group is not None
    assert pair.session is None, "no ticket for modes the server does not share (RFC 8446 §4.2.9)"


def test_dhe_only_psk_server_refuses_a_psk_ke_client() -> None:
    pair = Pair(psk_client_cfg(psk_modes=KE), psk_server_cfg(psk_modes=DHE))
    with pytest.raises(TlsError) as info:
        pair.run()
    assert pair.receiver == "server"
    assert info.value.alert == A.handshake_failure and "mode" in info.value.reason


def test_psk_modes_must_name_a_mode() -> None:
    with pytest.raises(ValueError):
        TlsConfig(alpn_protocols=[b"h3"], psk_modes=())
    with pytest.raises(ValueError):
        TlsConfig(alpn_protocols=[b"h3"], psk_modes=(2,))
    assert TlsConfig(alpn_protocols=[b"h3"], psk_modes=[0, 1, 0]).psk_modes == BOTH


# -- the client's checks of the ServerHello ----------------------------------------------


def _rebind(psk: ExternalPsk):
    """After editing a ClientHello, recompute its external-PSK binder (RFC 8446 §4.2.11.2)."""
    suite = SUITES[next(s for s in SUITES if SUITES[s].hash_name == psk.hash_name)]

    def fix(ch) -> None:
        identities, _ = ext.decode_offered_psks(ch.extensions[ET.PRE_SHARED_KEY])
        ch.extensions[ET.PRE_SHARED_KEY] = ext.encode_offered_psks(identities, [bytes(suite.hash_len)])
        binder = finished_verify_data(suite.hash_name, KeySchedule(suite, psk.key).binder_key(True),
                                      suite.hash(ch.binder_prefix()))
        ch.extensions[ET.PRE_SHARED_KEY] = ext.encode_offered_psks(identities, [binder])

    return fix


def test_key_share_answering_a_psk_ke_only_offer_is_illegal_parameter() -> None:
    """The client offered psk_ke only; the server (here: shown a psk_dhe_ke offer) answers
    with a key_share, i.e. a mode the client did not list (RFC 8446 §4.2.9)."""

    def to_dhe(ch) -> None:
        ch.extensions[ET.PSK_KEY_EXCHANGE_MODES] = ext.encode_psk_modes([M.PSK_DHE_KE])
        _rebind(PSK)(ch)

    pair = Pair(psk_client_cfg(psk_modes=KE), psk_server_cfg())
    with pytest.raises(TlsError) as info:
        pair.run(rewrite("client", HT.CLIENT_HELLO, to_dhe))
    assert pair.receiver == "client"
    assert info.value.alert == A.illegal_parameter and "psk_ke" in info.value.reason
    assert pair.client.failed is info.value


def test_missing_key_share_answering_a_psk_dhe_ke_only_offer_is_missing_extension() -> None:
    def to_ke(ch) -> None:
        ch.extensions[ET.PSK_KEY_EXCHANGE_MODES] = ext.encode_psk_modes([M.PSK_KE])
        _rebind(PSK)(ch)

    pair = Pair(psk_client_cfg(psk_modes=DHE), psk_server_cfg())
    with pytest.raises(TlsError) as info:
        pair.run(rewrite("client", HT.CLIENT_HELLO, to_ke))
    assert pair.receiver == "client" and info.value.alert == A.missing_extension


def test_missing_key_share_without_a_psk_is_missing_extension() -> None:
    """A full handshake's ServerHello must carry key_share, whatever modes were offered."""

    def drop_share(sh) -> None:
        del sh.extensions[ET.KEY_SHARE]

    pair = Pair(client_cfg(psk_modes=KE), server_cfg())
    with pytest.raises(TlsError) as info:
        pair.run(rewrite("server", HT.SERVER_HELLO, drop_share))
    assert pair.receiver == "client" and info.value.alert == A.missing_extension


# -- the server given a psk_ke ClientHello without key_share (as GnuTLS may send) -----------


def _psk_ke_hello_without_share(psk: ExternalPsk = PSK) -> bytes:
    """Our psk_ke-only ClientHello without key_share and supported_groups (RFC 8446 §9.2
    allows that with pre_shared_key), its binder recomputed."""
    events = ClientEngine(psk_client_cfg(psk, psk_modes=KE)).start(T)
    (start,) = [e for e in events if isinstance(e, SendHandshake)]
    ch = decode_message(start.data)
    del ch.extensions[ET.KEY_SHARE]
    del ch.extensions[ET.SUPPORTED_GROUPS]
    _rebind(psk)(ch)
    return ch.encode()


def test_server_does_psk_ke_for_a_hello_without_key_share() -> None:
    ch = _psk_ke_hello_without_share()
    server = ServerEngine(psk_server_cfg())
    events = server.receive(INI, ch, T)
    (sh_raw,) = [e.data for e in events if isinstance(e, SendHandshake) and e.level == INI]
    sh = decode_message(sh_raw)
    assert ET.KEY_SHARE not in sh.extensions and ET.PRE_SHARED_KEY in sh.extensions
    _, server_hs = psk_ke_handshake_secrets(PSK.key, ch, sh_raw)
    sent = [e.secret for e in events
            if isinstance(e, InstallSecret) and e.level == H and e.direction == Direction.SEND]
    assert sent == [server_hs]


@pytest.mark.parametrize(("server_kw", "psk_only_alert"), [
    (dict(psk_modes=DHE), A.missing_extension),
    (dict(psks=[ExternalPsk(b"other", bytes(32))]), A.unknown_psk_identity),
], ids=["dhe-only-server", "unknown-identity"])
def test_hello_without_key_share_when_the_psk_is_not_taken(server_kw, psk_only_alert) -> None:
    """No PSK accepted, so a certificate handshake, which needs the key share it lacks
    (RFC 8446 §9.2); a PSK-only server has nothing to fall back to."""
    ch = _psk_ke_hello_without_share()
    with_cert = server_cfg(**server_kw)
    with pytest.raises(TlsError) as info:
        ServerEngine(with_cert).receive(INI, ch, T)
    assert info.value.alert == A.missing_extension
    psk_only = psk_server_cfg(*server_kw.get("psks", [PSK]), psk_modes=server_kw.get("psk_modes", BOTH))
    with pytest.raises(TlsError) as info:
        ServerEngine(psk_only).receive(INI, ch, T)
    assert info.value.alert == psk_only_alert
