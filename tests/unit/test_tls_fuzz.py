"""Property tests: whatever bytes a peer sends, the engine returns events or raises TlsError,
and never with internal_error (that alert only comes out of the safety net in
TlsEngine._guard, so it would mean a bug of ours that a peer can trigger).

Real handshakes in several modes (full with a certificate, HelloRetryRequest, resumption
with 0-RTT, client authentication, external PSK, and an unverifying client) are recorded
(every SendHandshake). A test then replays one mode's conversation live against fresh
engines up to a chosen delivery, mutates that delivery (bytes flipped, set, cut, inserted,
deleted, spliced from another message; one message's body re-framed so the decoders see
it; one extension of one message rewritten; a certificate's DER damaged; the message type
or the crypto level changed) and feeds it in random chunks; the rest of the conversation
goes on unaltered. Valid conversations chunked arbitrarily must still complete.

Hypothesis runs derandomized with no example database, so CI is deterministic in what it
tries (the engines' own key material still varies per run).
"""
from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quichsd.tls.client import ClientEngine
from quichsd.tls.config import ClientAuth
from quichsd.tls.constants import AlertDescription, CryptoLevel, ExtensionType, HandshakeType, NamedGroup
from quichsd.tls.errors import TlsError
from quichsd.tls.events import HandshakeComplete
from quichsd.tls.messages import Certificate, decode_message, frame
from quichsd.tls.server import ServerEngine
from tests.tls_tamper import (
    Pair,
    T,
    client_cfg,
    creds,
    psk_client_cfg,
    psk_server_cfg,
    server_cfg,
    split,
    trust,
)

MODES = ["full", "hrr", "resumption", "client_auth", "psk", "unverified"]
TICKET_KEY = bytes(range(64))
LEVELS = [CryptoLevel.INITIAL, CryptoLevel.HANDSHAKE, CryptoLevel.APP, CryptoLevel.EARLY]

SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@functools.cache
def _session():
    first = Pair(client_cfg(),
                 server_cfg("ed25519", session_ticket_key=TICKET_KEY, enable_early_data=True)).run()
    assert first.session is not None
    return first.session


def make_pair(mode: str) -> Pair:
    """A fresh pair of engines for `mode` (ed25519 certificates: fixed-size signatures)."""
    if mode == "full":
        return Pair(client_cfg(), server_cfg("ed25519", session_ticket_key=TICKET_KEY))
    if mode == "hrr":
        return Pair(client_cfg(groups=[NamedGroup.X25519, NamedGroup.SECP256R1]),
                    server_cfg("ed25519", groups=[NamedGroup.SECP256R1]))
    if mode == "resumption":
        return Pair(client_cfg(session=_session(), enable_early_data=True),
                    server_cfg("ed25519", session_ticket_key=TICKET_KEY, enable_early_data=True), T + 1)
    if mode == "client_auth":
        return Pair(client_cfg(credentials=creds("ed25519", "client")),
                    server_cfg("ed25519", client_auth=ClientAuth.REQUIRED, trust=trust()))
    if mode == "psk":
        return Pair(psk_client_cfg(), psk_server_cfg())
    if mode == "unverified":  # the server's key reaches CertificateVerify unchecked
        return Pair(client_cfg(verify_peer=False), server_cfg("rsa"))
    raise ValueError(mode)


@functools.cache
def recorded(mode: str) -> tuple[tuple[str, CryptoLevel, bytes], ...]:
    """Every SendHandshake of one unaltered handshake in `mode`, in delivery order."""
    pair = make_pair(mode).run()
    for side in ("client", "server"):
        assert any(isinstance(e, HandshakeComplete) for e in pair.events[side]), (mode, side)
    return tuple(pair.sent)


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[bytes, ...]:
    """Every message of every mode: material to splice in."""
    return tuple(raw for mode in MODES for _, _, data in recorded(mode) for raw in split(data))


# -- mutations ---------------------------------------------------------------------------

_pos = st.integers(0, 1 << 16)
_op = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(1, 255)),
    st.tuples(st.just("set"), _pos, st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF])),
    st.tuples(st.just("truncate"), _pos),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), _pos, st.integers(1, 16)),
    st.tuples(st.just("splice"), _pos, _pos, _pos, st.integers(1, 64)),
)
_ops = st.lists(_op, min_size=1, max_size=3)
# How a delivery is altered: the raw bytes; one message's body (length header fixed);
# one extension of one message (or a new one); the message type; the crypto level.
_scope = st.one_of(
    st.tuples(st.just("raw")),
    st.tuples(st.just("body"), _pos),
    st.tuples(st.just("extension"), _pos, _pos,
              st.one_of(st.none(), st.sampled_from([int(e) for e in ExtensionType]), st.integers(0, 0xFFFF))),
    st.tuples(st.just("type"), _pos, st.integers(0, 255)),
    st.tuples(st.just("certificate"), _pos),
    st.tuples(st.just("level"), st.sampled_from(LEVELS)),
)
_cuts = st.lists(_pos, max_size=5)


def apply_ops(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op in ops:
        kind = op[0]
        n = len(buf)
        if kind == "flip" and n:
            buf[op[1] % n] ^= op[2]
        elif kind == "set" and n:
            buf[op[1] % n] = op[2]
        elif kind == "truncate":
            del buf[op[1] % (n + 1):]
        elif kind == "extend":
            buf += op[1]
        elif kind == "insert":
            at = op[1] % (n + 1)
            buf[at:at] = op[2]
        elif kind == "delete" and n:
            at = op[1] % n
            del buf[at : at + op[2]]
        elif kind == "splice":
            donors = corpus()
            donor = donors[op[2] % len(donors)]
            start = op[3] % len(donor)
            piece = donor[start : start + op[4]]
            at = op[1] % (n + 1)
            buf[at : at + len(piece)] = piece
    return bytes(buf)


def _extension_blocks(msg) -> list[dict[int, bytes]]:
    blocks = [msg.extensions] if hasattr(msg, "extensions") else []
    if isinstance(msg, Certificate):
        blocks += [entry.extensions for entry in msg.entries]
    return blocks


def mutate(data: bytes, scope, ops) -> list[tuple[CryptoLevel | None, bytes]]:
    """The altered delivery as (level or None for unchanged, bytes)."""
    kind = scope[0]
    if kind == "raw":
        return [(None, apply_ops(data, ops))]
    if kind == "level":
        return [(scope[1], data)]
    msgs = split(data)
    index = scope[1] % len(msgs)
    raw = msgs[index]
    if kind == "body":
        msgs[index] = frame(raw[0], apply_ops(raw[4:], ops))
    elif kind == "type":
        msgs[index] = bytes((scope[2],)) + raw[1:]
    elif kind == "certificate":
        certs = [i for i, m in enumerate(msgs) if m[0] == HandshakeType.CERTIFICATE]
        if not certs:
            msgs[index] = frame(raw[0], apply_ops(raw[4:], ops))
        else:
            index = certs[0]
            cert = decode_message(msgs[index])
            if cert.entries:  # type: ignore[attr-defined]
                entry = cert.entries[scope[1] % len(cert.entries)]  # type: ignore[attr-defined]
                entry.cert_data = apply_ops(entry.cert_data, ops) or b"\x30"
            msgs[index] = cert.encode()
    else:  # one extension
        msg = decode_message(raw)
        blocks = _extension_blocks(msg)
        if not blocks:
            msgs[index] = frame(raw[0], apply_ops(raw[4:], ops))
        else:
            block = blocks[scope[2] % len(blocks)]
            new_type = scope[3]
            if new_type is not None or not block:
                block[new_type or 0] = apply_ops(b"", ops)
            else:
                key = list(block)[scope[2] % len(block)]
                block[key] = apply_ops(block[key], ops)
            msgs[index] = msg.encode()
    return [(None, b"".join(msgs))]


def chunked(data: bytes, cuts) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


# -- the checks -----------------------------------------------------------------------------


def _check_clean_failure(pair: Pair, err: TlsError, report: str) -> None:
    assert err.alert != AlertDescription.internal_error, f"internal_error surfaced: {err.reason}\n{report}"
    assert pair.receiver is not None
    engine = pair.engine(pair.receiver)
    assert engine.failed is err
    with pytest.raises(TlsError) as again:
        engine.receive(CryptoLevel.HANDSHAKE, b"", T)
    assert again.value is err


def _run_reporting(pair: Pair, hook, report) -> None:
    try:
        pair.run(hook)
    except TlsError as err:
        _check_clean_failure(pair, err, report())
    except Exception as exc:  # noqa: BLE001 - the property: nothing but TlsError escapes
        pytest.fail(f"{type(exc).__name__} escaped the engine: {exc}\n{report()}")


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=50, **SETTINGS)
@given(target=_pos, scope=_scope, ops=_ops, cuts=_cuts)
def test_mutated_conversation_fails_cleanly(mode, target, scope, ops, cuts) -> None:
    k = target % len(recorded(mode))
    pair = make_pair(mode)
    delivered: list[tuple[CryptoLevel, bytes]] = []
    count = 0

    def hook(who, level, data):
        nonlocal count
        count += 1
        if count - 1 != k:
            return None
        out = []
        for new_level, altered in mutate(data, scope, ops):
            for piece in chunked(altered, cuts):
                out.append((new_level if new_level is not None else level, piece))
        delivered.extend(out)
        return out

    def report() -> str:
        sender, level, _ = recorded(mode)[k]
        data = b"".join(piece for _, piece in delivered)
        return (f"mode={mode} delivery={k} ({sender} at {level.name}) scope={scope} ops={ops} cuts={cuts}\n"
                f"delivered {[(lvl.name, len(p)) for lvl, p in delivered]}: {data.hex()[:4000]}")

    _run_reporting(pair, hook, report)


# The first 256 bytes of a DER certificate hold its version, serial, names, validity and
# the head of its public key info: the fields cryptography parses lazily or rejects.
_HEAD_FLIP = st.tuples(st.just("flip"), st.integers(0, 255), st.integers(1, 255))


@pytest.mark.parametrize("mode", ["full", "unverified", "client_auth"])
@settings(max_examples=80, **SETTINGS)
@given(entry=_pos, ops=st.one_of(st.lists(_HEAD_FLIP, min_size=1, max_size=2), _ops))
def test_mutated_certificate_fails_cleanly(mode, entry, ops) -> None:
    """Certificates are parsed by cryptography, lazily: a damaged DER must still end as a
    certificate alert (bad_certificate, unsupported_certificate, unknown_ca, ...)."""
    sender = "client" if mode == "client_auth" else "server"
    pair = make_pair(mode)
    delivered: list[bytes] = []

    def hook(who, level, data):
        if who != sender or level != CryptoLevel.HANDSHAKE or delivered:
            return None
        ((_, altered),) = mutate(data, ("certificate", entry), ops)
        delivered.append(altered)
        return altered

    _run_reporting(pair, hook, lambda: f"mode={mode} entry={entry} ops={ops}\n{delivered[0].hex()}")


@settings(max_examples=100, **SETTINGS)
@given(mode=st.sampled_from(MODES), scope=_scope, ops=_ops, cuts=_cuts)
def test_mutated_client_hello_to_a_fresh_server(mode, scope, ops, cuts) -> None:
    """The cheapest target: a recorded first ClientHello, altered, to a fresh server."""
    sender, level, hello = recorded(mode)[0]
    assert sender == "client" and level == CryptoLevel.INITIAL
    server = make_pair(mode).server
    pieces = [(lvl or level, piece)
              for lvl, altered in mutate(hello, scope, ops) for piece in chunked(altered, cuts)]
    try:
        for lvl, piece in pieces:
            for event in server.receive(lvl, piece, T):
                assert not isinstance(event, HandshakeComplete)
    except TlsError as err:
        assert err.alert != AlertDescription.internal_error, (
            f"internal_error surfaced: {err.reason}\nmode={mode} scope={scope} ops={ops} "
            f"cuts={cuts}\n{[(lvl.name, p.hex()) for lvl, p in pieces]}")
        assert server.failed is err


@settings(max_examples=40, **SETTINGS)
@given(side=st.sampled_from(["client", "server"]), level=st.sampled_from(LEVELS),
       data=st.binary(max_size=300), started=st.booleans())
def test_random_bytes_to_a_fresh_engine(side, level, data, started) -> None:
    pair = make_pair("full")
    engine: ClientEngine | ServerEngine = pair.engine(side)  # type: ignore[assignment]
    if side == "client" and started:
        engine.start(T)
    try:
        engine.receive(level, data, T)
    except TlsError as err:
        assert err.alert != AlertDescription.internal_error, f"{side} {level.name} {data.hex()}: {err.reason}"


# -- valid conversations, chunked -------------------------------------------------------------


def _chunking_hook(split_for):
    def hook(who, level, data):
        return [(level, piece) for piece in split_for(data)]

    return hook


def _assert_complete(pair: Pair) -> None:
    for side in ("client", "server"):
        assert any(isinstance(e, HandshakeComplete) for e in pair.events[side]), side


@pytest.mark.parametrize("mode", MODES)
def test_one_byte_chunks_complete(mode) -> None:
    pair = make_pair(mode).run(_chunking_hook(lambda data: [data[i : i + 1] for i in range(len(data))]))
    _assert_complete(pair)
    assert pair.sent and all(isinstance(level, CryptoLevel) for _, level, _ in pair.sent)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=10, **SETTINGS)
@given(cuts=st.lists(st.lists(_pos, max_size=8), min_size=8, max_size=8))
def test_random_chunks_complete(mode, cuts) -> None:
    seen = 0

    def split_for(data: bytes) -> list[bytes]:
        nonlocal seen
        seen += 1
        return chunked(data, cuts[(seen - 1) % len(cuts)])

    _assert_complete(make_pair(mode).run(_chunking_hook(split_for)))


def test_the_recorded_modes_cover_every_message_type() -> None:
    """Sanity for the generators above: the corpus has every message the engine parses."""
    types = {raw[0] for raw in corpus()}
    assert types >= {1, 2, 4, 8, 11, 13, 15, 20}
    assert any(level == CryptoLevel.APP for mode in MODES for _, level, _ in recorded(mode))
    assert all(isinstance(data, bytes) for mode in MODES for _, _, data in recorded(mode))
