"""A peer's CONNECTION_CLOSE in words (RFC 9000 §19.19), for the error of a call on the
connection it closed. One formatter for both backends: the simulation knows the frame it
received, the kernel backend reads the same fields back with QUIC_SOCKOPT_CONNECTION_CLOSE."""
from __future__ import annotations

from ..tls.constants import AlertDescription
from .errors import CRYPTO_ERROR_BASE, QuicErrorCode

__all__ = ["describe_peer_close"]

PHRASE_LIMIT = 63  # what the kernel keeps of a phrase (QUIC_CLOSE_PHRASE_BUFFER_SIZE - 1)


def describe_peer_close(code: int, phrase: bytes, app: bool | None = False) -> str:
    """E.g. "peer closed: 0x12a (TLS alert bad_certificate: ...)": the code, what it means
    (0x100+N is TLS alert N, RFC 9001 §4.8) and the reason phrase. `app` says whether the
    close was an application's (frame 0x1d); None when the source cannot tell (the kernel
    keeps no such bit), and the code is then read in the transport space."""
    if app:
        meaning = "application error"
    elif CRYPTO_ERROR_BASE <= code <= CRYPTO_ERROR_BASE + 0xFF:
        name = _alert_name(code - CRYPTO_ERROR_BASE)
        meaning = f"TLS alert {name}"
        if phrase == name.encode():  # the phrase quichsd's own handshake gives
            return f"peer closed: 0x{code:x} ({meaning})"
    else:
        try:
            meaning = QuicErrorCode(code).name
        except ValueError:
            # Outside the transport space only an application's code is possible.
            meaning = "transport error" if app is not None else "application error"
    text = phrase[:PHRASE_LIMIT].decode("utf-8", "replace")  # the peer's bytes
    if text and not text.isprintable():
        text = ascii(text)
    if text:
        meaning = f"{meaning}: {text}"
    return f"peer closed: 0x{code:x} ({meaning})"


def _alert_name(alert: int) -> str:
    try:
        return AlertDescription(alert).name
    except ValueError:
        return str(alert)
