"""The UDP simulation backend: a userspace QUIC stack that behaves, at the socket boundary,
as the kernel's IPPROTO_QUIC does (spec/kernel-quic-abi.md §1, §2, §5).

connection.py holds the sans-I/O SimConnection; the other modules are its parts (frames,
packets, CRYPTO streams, recovery, streams, transport parameters, the listener's peek).
"""
from .connection import SimConnection, SimError
from .listener_peek import ClientHelloRejected, packet_dcid, parse_initial_header, peek_client_hello_alpn
from .state import ConnState

__all__ = [
    "ConnState",
    "SimConnection",
    "SimError",
    "ClientHelloRejected",
    "packet_dcid",
    "parse_initial_header",
    "peek_client_hello_alpn",
]
