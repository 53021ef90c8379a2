"""The socket layer: QuicSocket over the kernel's IPPROTO_QUIC or the UDP simulation."""
from .quicsocket import QuicSocket

__all__ = ["QuicSocket"]
