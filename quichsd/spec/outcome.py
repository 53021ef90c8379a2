"""What a check expects, what came instead, and the verdict."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from ..quic.errors import CRYPTO_ERROR_BASE, QuicErrorCode
from ..tls.constants import AlertDescription

__all__ = ["Outcome", "Observed", "Result", "Verdict", "alert", "code_name", "judge"]


def alert(description: AlertDescription) -> int:
    """A TLS alert as the QUIC error code that carries it (RFC 9001 §4.8)."""
    return CRYPTO_ERROR_BASE + int(description)


def code_name(code: int) -> str:
    if CRYPTO_ERROR_BASE <= code <= CRYPTO_ERROR_BASE + 0xFF:
        try:
            name = AlertDescription(code - CRYPTO_ERROR_BASE).name
        except ValueError:
            name = f"alert {code - CRYPTO_ERROR_BASE}"
        return f"CRYPTO_ERROR {name} (0x{code:x})"
    try:
        return f"{QuicErrorCode(code).name} (0x{code:02x})"
    except ValueError:
        return f"0x{code:x}"


class Outcome(enum.Enum):
    """How a connection ended from our side's point of view."""

    CLOSED = "closed by the server"  # a CONNECTION_CLOSE arrived
    TIMEOUT = "timeout"  # nothing ended it within the check's time
    LOCAL = "closed by our client"  # our side gave up (its own bug or a server's mistake)


@dataclass(frozen=True)
class Observed:
    outcome: Outcome
    code: int = 0
    application: bool = False  # CONNECTION_CLOSE 0x1d
    reason: str = ""
    handshake_complete: bool = False


class Verdict(enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"  # our client could not carry the check out: no verdict on the server


@dataclass(frozen=True)
class Result:
    name: str
    section: str
    verdict: Verdict
    detail: str  # what came, said for a reader
    observed: Observed
    seconds: float


def _said(observed: Observed) -> str:
    reason = f' "{observed.reason}"' if observed.reason else ""
    if observed.outcome is Outcome.CLOSED:
        kind = "application close " if observed.application else ""
        return f"{kind}{code_name(observed.code)}{reason}"
    state = "handshake completed" if observed.handshake_complete else "handshake not completed"
    if observed.outcome is Outcome.TIMEOUT:
        return f"no CONNECTION_CLOSE within the timeout ({state})"
    return f"our client closed the connection: {code_name(observed.code)}{reason} ({state})"


def judge(expected: tuple[int, ...], observed: Observed) -> tuple[Verdict, str]:
    """PASS only for a transport CONNECTION_CLOSE with one of the expected codes."""
    said = _said(observed)
    if observed.outcome is Outcome.CLOSED and not observed.application and observed.code in expected:
        return Verdict.PASS, said
    if observed.outcome is Outcome.LOCAL:
        return Verdict.ERROR, said
    return Verdict.FAIL, said
