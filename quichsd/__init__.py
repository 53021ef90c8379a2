"""quichsd: a userspace TLS 1.3 handshake agent for in-kernel QUIC."""

__version__ = "0.1.0"
