"""Target tls_engine: our client and server TLS engines (quichsd/tls/client.py, server.py,
engine.py) fed arbitrary bytes at each crypto level, in the middle of real handshakes.

The handshakes are those of fuzz/handshakes.py (full, HelloRetryRequest, resumption with
0-RTT, client authentication, external PSK, an unverifying client, a server sending its
ServerHello alone), reproducible byte for
byte. A scenario is one delivery of one of them: the conversation runs live up to it, the
fuzzer's bytes replace that delivery, and the conversation goes on live from there.

Input:
    byte 0   the scenario (delivery k of a mode; the last one: a client never started)
    byte 1   low 3 bits: the level the bytes arrive at (0: the delivery's own, then
             INITIAL, HANDSHAKE, APP, EARLY); bit 3: deliver them in two receive() calls
    byte 2   where to cut them in two
    rest     the bytes

A bug is: any exception other than TlsError out of receive(); a TlsError carrying
internal_error (that alert comes only from the engine's safety net around an unexpected
exception: a bug a peer can trigger); an engine that raised but does not stay failed with
that same error.
"""
from __future__ import annotations

from quichsd.tls.client import ClientEngine
from quichsd.tls.constants import AlertDescription, CryptoLevel
from quichsd.tls.errors import TlsError

from .handshakes import MODES, Conversation, Delivery, T, configs, deterministic, recorded

LEVELS = (None, CryptoLevel.INITIAL, CryptoLevel.HANDSHAKE, CryptoLevel.APP, CryptoLevel.EARLY)
FRESH_CLIENT = ("fresh_client", -1)
SCENARIOS: tuple[tuple[str, int], ...] = tuple(
    (mode, k) for mode in MODES for k in range(len(recorded(mode)))
) + (FRESH_CLIENT,)


def header(scenario: tuple[str, int], level: CryptoLevel | None = None, cut: int | None = None) -> bytes:
    """The 3 bytes before the payload that select `scenario`, `level` and a cut."""
    flags = LEVELS.index(level) | (8 if cut is not None else 0)
    return bytes((SCENARIOS.index(scenario), flags, cut or 0))


def _pieces(data: bytes, level: CryptoLevel, flags: int, cut: int) -> list[Delivery]:
    level = LEVELS[flags & 7 if flags & 7 < len(LEVELS) else 0] or level
    if flags & 8:
        at = cut % (len(data) + 1)
        return [(level, data[:at]), (level, data[at:])]
    return [(level, data)]


def _check_failure(engine, err: TlsError) -> None:
    assert err.alert != AlertDescription.internal_error, f"internal_error: {err.reason}"
    assert engine.failed is err, "the engine raised but is not failed with that error"
    try:
        engine.receive(CryptoLevel.HANDSHAKE, b"", T)
    except TlsError as again:
        assert again is err, "a failed engine raised another error"
    else:
        raise AssertionError("a failed engine took more input")


def _fresh_client(payload: bytes, flags: int, cut: int) -> None:
    client_cfg, _ = configs("full")
    engine = ClientEngine(client_cfg)
    with deterministic(b"fresh"):
        try:
            for level, piece in _pieces(payload, CryptoLevel.INITIAL, flags, cut):
                engine.receive(level, piece, T)
        except TlsError as err:
            _check_failure(engine, err)


def one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    mode, k = SCENARIOS[data[0] % len(SCENARIOS)]
    flags, cut, payload = data[1], data[2], data[3:]
    if (mode, k) == FRESH_CLIENT:
        _fresh_client(payload, flags, cut)
        return
    conv = Conversation(mode)

    def hook(index: int, sender: str, level: CryptoLevel, sent: bytes) -> list[Delivery] | None:
        return _pieces(payload, level, flags, cut) if index == k else None

    try:
        conv.run(hook)
    except TlsError as err:
        assert conv.receiver is not None
        _check_failure(conv.engine(conv.receiver), err)
