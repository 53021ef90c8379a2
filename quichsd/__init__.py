"""quichsd: a userspace TLS 1.3 handshake agent for in-kernel QUIC."""

__version__ = "0.1.0"

from .handshake import (  # noqa: E402
    HandshakeConfig,
    HandshakeError,
    HandshakeResult,
    quic_client_handshake,
    quic_handshake,
    quic_server_handshake,
)
from .sock import QuicSocket  # noqa: E402

__all__ = [
    "HandshakeConfig",
    "HandshakeError",
    "HandshakeResult",
    "QuicSocket",
    "quic_client_handshake",
    "quic_handshake",
    "quic_server_handshake",
]
