"""The socket layer: QuicSocket over the kernel's IPPROTO_QUIC or the UDP simulation."""
from .base import QuicSocketBackend
from .quicsocket import QuicSocket, SocketLike, as_backend

__all__ = ["QuicSocket", "QuicSocketBackend", "SocketLike", "as_backend"]
