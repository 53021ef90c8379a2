"""RFC 9000 §20.1 error codes and QuicError."""
from __future__ import annotations

import pytest

from quichsd.abi import lib
from quichsd.quic.errors import CRYPTO_ERROR_BASE, QuicError, QuicErrorCode, crypto_error

RFC9000_20_1 = {
    "NO_ERROR": 0x00,
    "INTERNAL_ERROR": 0x01,
    "CONNECTION_REFUSED": 0x02,
    "FLOW_CONTROL_ERROR": 0x03,
    "STREAM_LIMIT_ERROR": 0x04,
    "STREAM_STATE_ERROR": 0x05,
    "FINAL_SIZE_ERROR": 0x06,
    "FRAME_ENCODING_ERROR": 0x07,
    "TRANSPORT_PARAMETER_ERROR": 0x08,
    "CONNECTION_ID_LIMIT_ERROR": 0x09,
    "PROTOCOL_VIOLATION": 0x0A,
    "INVALID_TOKEN": 0x0B,
    "APPLICATION_ERROR": 0x0C,
    "CRYPTO_BUFFER_EXCEEDED": 0x0D,
    "KEY_UPDATE_ERROR": 0x0E,
    "AEAD_LIMIT_REACHED": 0x0F,
    "NO_VIABLE_PATH": 0x10,
    "VERSION_NEGOTIATION_ERROR": 0x11,
    "CRYPTO_ERROR": 0x100,
}


def test_codes() -> None:
    assert {c.name: c.value for c in QuicErrorCode} == RFC9000_20_1


def test_codes_match_kernel_enum() -> None:
    kernel = {
        "NO_ERROR": "NONE",
        "TRANSPORT_PARAMETER_ERROR": "TRANSPORT_PARAM",
        "CRYPTO_BUFFER_EXCEEDED": "CRYPTO_BUF_EXCEEDED",
        "KEY_UPDATE_ERROR": "KEY_UPDATE",
    }
    for code in QuicErrorCode:
        name = kernel.get(code.name, code.name.removesuffix("_ERROR"))
        assert getattr(lib, f"QUIC_TRANSPORT_ERROR_{name}") == code


def test_crypto_error() -> None:
    assert CRYPTO_ERROR_BASE == 0x100
    assert crypto_error(40) == 0x128  # handshake_failure
    with pytest.raises(ValueError):
        crypto_error(256)


def test_quic_error_fields() -> None:
    err = QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "bad frame", frame_type=0x06)
    assert (err.error_code, err.reason, err.frame_type) == (0x0A, "bad frame", 0x06)
    assert "PROTOCOL_VIOLATION" in str(err)
    err = QuicError(crypto_error(120), "no ALPN")
    assert err.error_code == 0x178 and err.frame_type is None
    assert "alert 120" in str(err)
