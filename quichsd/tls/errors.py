"""The engine's one error type: every failure carries the TLS alert it maps to."""
from __future__ import annotations

from .constants import AlertDescription

# RFC 9001 §4.8: a TLS alert becomes QUIC error 0x100 + alert.
QUIC_CRYPTO_ERROR_BASE = 0x100


class TlsError(Exception):
    """A fatal handshake error. `alert` is what the peer must learn (as 0x100 + alert)."""

    def __init__(self, alert: AlertDescription, reason: str) -> None:
        super().__init__(f"{alert.name}: {reason}")
        self.alert = AlertDescription(alert)
        self.reason = reason

    @property
    def quic_error(self) -> int:
        return QUIC_CRYPTO_ERROR_BASE + int(self.alert)


def decode_error(reason: str) -> TlsError:
    return TlsError(AlertDescription.decode_error, reason)


def illegal_parameter(reason: str) -> TlsError:
    return TlsError(AlertDescription.illegal_parameter, reason)


def unexpected_message(reason: str) -> TlsError:
    return TlsError(AlertDescription.unexpected_message, reason)
