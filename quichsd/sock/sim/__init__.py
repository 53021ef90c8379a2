"""The UDP simulation backend: a userspace QUIC stack that behaves, at the socket boundary,
as the kernel's IPPROTO_QUIC does (spec/kernel-quic-abi.md §1, §2, §5).

connection.py holds the sans-I/O SimConnection, composed of parts that each own their state
(keys, connection IDs, timers, packet number spaces, address validation, transport
parameters, CRYPTO data, streams, the close; lifecycle.py for the state and the steps that
span parts) with receiver.py and sender.py as its two halves of the wire; the other modules
are the codecs and the socket around it (frames, packets, CRYPTO streams, recovery,
transport parameters, the listener's peek, endpoint, socket).
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
