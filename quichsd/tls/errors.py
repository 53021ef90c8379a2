"""The engine's one error type: every failure carries the TLS alert it maps to."""
from __future__ import annotations

from .constants import AlertDescription

# RFC 9001 §4.8: a TLS alert becomes QUIC error 0x100 + alert.
QUIC_CRYPTO_ERROR_BASE = 0x100


class TlsError(Exception):
    """A fatal handshake error. `alert` is what the peer must learn (as 0x100 + alert)."""

    def __init__(self, alert: AlertDescription, reason: str, quic_error: int | None = None) -> None:
        super().__init__(f"{AlertDescription(alert).name}: {reason}")
        self.alert = AlertDescription(alert)
        self.reason = reason
        # A few QUIC rules (RFC 9001 §8.3, §8.4) name a transport error instead of an alert.
        self._quic_error = quic_error

    @property
    def quic_error(self) -> int:
        if self._quic_error is not None:
            return self._quic_error
        return QUIC_CRYPTO_ERROR_BASE + int(self.alert)


def decode_error(reason: str) -> TlsError:
    return TlsError(AlertDescription.decode_error, reason)


def illegal_parameter(reason: str) -> TlsError:
    return TlsError(AlertDescription.illegal_parameter, reason)


def unexpected_message(reason: str) -> TlsError:
    return TlsError(AlertDescription.unexpected_message, reason)


# RFC 9000 §20.1 PROTOCOL_VIOLATION, for the QUIC-specific TLS rules of RFC 9001 §8.
QUIC_PROTOCOL_VIOLATION = 0x0A


def protocol_violation(reason: str) -> TlsError:
    return TlsError(AlertDescription.unexpected_message, reason, QUIC_PROTOCOL_VIOLATION)
