"""struct sockaddr_in / sockaddr_in6 bytes, as setsockopt(QUIC_SOCKOPT_CONNECTION_MIGRATION)
takes them (the kernel reads them with quic_get_user_addr), for both backends."""
from __future__ import annotations

import errno
import socket
import struct
from typing import Any

__all__ = ["pack_sockaddr", "unpack_sockaddr"]

_IN = struct.Struct("=H")  # sa_family, host order; the rest is network order
SOCKADDR_IN_LEN = 16
SOCKADDR_IN6_LEN = 28


def pack_sockaddr(addr: tuple[Any, ...]) -> bytes:
    """(host, port) or (host, port, flowinfo, scope_id) with a numeric host."""
    host, port = addr[0], addr[1]
    if ":" in host:
        flow, scope = (addr[2], addr[3]) if len(addr) >= 4 else (0, 0)
        return (_IN.pack(socket.AF_INET6) + struct.pack("!HI", port, flow)
                + socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", scope))
    packed = socket.inet_pton(socket.AF_INET, host)
    return _IN.pack(socket.AF_INET) + struct.pack("!H", port) + packed + bytes(8)


def unpack_sockaddr(data: bytes) -> tuple[Any, ...]:
    """The address in `data`, as Python's socket module writes it; OSError(EINVAL) for a
    short buffer or another family."""
    if len(data) >= 2:
        family = _IN.unpack_from(data)[0]
        if family == socket.AF_INET and len(data) >= SOCKADDR_IN_LEN:
            (port,) = struct.unpack_from("!H", data, 2)
            return socket.inet_ntop(socket.AF_INET, data[4:8]), port
        if family == socket.AF_INET6 and len(data) >= SOCKADDR_IN6_LEN:
            port, flow = struct.unpack_from("!HI", data, 2)
            (scope,) = struct.unpack_from("=I", data, 24)
            return socket.inet_ntop(socket.AF_INET6, data[8:24]), port, flow, scope
    raise OSError(errno.EINVAL, "not a sockaddr_in or sockaddr_in6")
