"""QUIC transport error codes (RFC 9000 §20.1) and the one exception that carries them."""
from __future__ import annotations

from enum import IntEnum

__all__ = ["QuicErrorCode", "QuicError", "CRYPTO_ERROR_BASE", "crypto_error"]

# RFC 9001 §4.8: TLS alert N is reported as transport error 0x100 + N.
CRYPTO_ERROR_BASE = 0x100


class QuicErrorCode(IntEnum):
    NO_ERROR = 0x00
    INTERNAL_ERROR = 0x01
    CONNECTION_REFUSED = 0x02
    FLOW_CONTROL_ERROR = 0x03
    STREAM_LIMIT_ERROR = 0x04
    STREAM_STATE_ERROR = 0x05
    FINAL_SIZE_ERROR = 0x06
    FRAME_ENCODING_ERROR = 0x07
    TRANSPORT_PARAMETER_ERROR = 0x08
    CONNECTION_ID_LIMIT_ERROR = 0x09
    PROTOCOL_VIOLATION = 0x0A
    INVALID_TOKEN = 0x0B
    APPLICATION_ERROR = 0x0C
    CRYPTO_BUFFER_EXCEEDED = 0x0D
    KEY_UPDATE_ERROR = 0x0E
    AEAD_LIMIT_REACHED = 0x0F
    NO_VIABLE_PATH = 0x10
    VERSION_NEGOTIATION_ERROR = 0x11  # RFC 9368 §10.2
    CRYPTO_ERROR = CRYPTO_ERROR_BASE  # first of 0x100-0x1ff


def crypto_error(alert: int) -> int:
    """Transport error code for TLS alert `alert` (RFC 9001 §4.8)."""
    if not 0 <= alert <= 0xFF:
        raise ValueError(f"TLS alert {alert} out of range")
    return CRYPTO_ERROR_BASE + alert


class QuicError(Exception):
    """A connection error: what goes into CONNECTION_CLOSE (RFC 9000 §19.19).

    `error_code` is an int, not only a QuicErrorCode: 0x100 + alert values have no
    enum member of their own.
    """

    def __init__(self, error_code: int, reason: str, frame_type: int | None = None) -> None:
        super().__init__(f"{_code_name(error_code)}: {reason}")
        self.error_code = int(error_code)
        self.reason = reason
        self.frame_type = frame_type


def _code_name(code: int) -> str:
    if CRYPTO_ERROR_BASE <= code <= CRYPTO_ERROR_BASE + 0xFF:
        return f"CRYPTO_ERROR(alert {code - CRYPTO_ERROR_BASE})"
    try:
        return QuicErrorCode(code).name
    except ValueError:
        return f"error 0x{code:x}"
