"""The numbers of the in-kernel QUIC socket ABI (spec/kernel-quic-abi.md §1), in pure Python.

quic/, tls/ and sock/ take their levels, cipher types, option, cmsg, event and message-flag
numbers from here, so none of them needs the compiled cffi module (quichsd/abi.py) for a
number and no package keeps its own copy. The values are the kernel's uapi ones (as in
csrc/quic_abi.h); tests/unit/test_kernel_numbers.py checks every one against the compiled
layouts (`abi.lib`), so a change on the C side cannot go unnoticed.
"""
from __future__ import annotations

from enum import IntEnum

__all__ = [
    "CryptoLevel",
    "Direction",
    "QuicEvent",
    "IPPROTO_QUIC",
    "SOL_QUIC",
    "QUIC_STREAM_INFO",
    "QUIC_HANDSHAKE_INFO",
    "QUIC_CRYPTO_APP",
    "QUIC_CRYPTO_INITIAL",
    "QUIC_CRYPTO_HANDSHAKE",
    "QUIC_CRYPTO_EARLY",
    "TLS_CIPHER_AES_GCM_128",
    "TLS_CIPHER_AES_GCM_256",
    "TLS_CIPHER_AES_CCM_128",
    "TLS_CIPHER_CHACHA20_POLY1305",
    "QUIC_SOCKOPT_EVENT",
    "QUIC_SOCKOPT_STREAM_OPEN",
    "QUIC_SOCKOPT_STREAM_RESET",
    "QUIC_SOCKOPT_STREAM_STOP_SENDING",
    "QUIC_SOCKOPT_CONNECTION_ID",
    "QUIC_SOCKOPT_CONNECTION_CLOSE",
    "QUIC_SOCKOPT_CONNECTION_MIGRATION",
    "QUIC_SOCKOPT_KEY_UPDATE",
    "QUIC_SOCKOPT_TRANSPORT_PARAM",
    "QUIC_SOCKOPT_CONFIG",
    "QUIC_SOCKOPT_TOKEN",
    "QUIC_SOCKOPT_ALPN",
    "QUIC_SOCKOPT_SESSION_TICKET",
    "QUIC_SOCKOPT_CRYPTO_SECRET",
    "QUIC_SOCKOPT_TRANSPORT_PARAM_EXT",
    "MSG_QUIC_STREAM_NEW",
    "MSG_QUIC_STREAM_FIN",
    "MSG_QUIC_STREAM_UNI",
    "MSG_QUIC_STREAM_DONTWAIT",
    "MSG_QUIC_STREAM_SNDBLOCK",
    "MSG_QUIC_DATAGRAM",
    "MSG_QUIC_NOTIFICATION",
    "MSG_PEEK",
    "MSG_CTRUNC",
    "MSG_DONTWAIT",
    "MSG_EOR",
    "MSG_WAITALL",
    "MSG_NOSIGNAL",
    "MSG_MORE",
    "MSG_BATCH",
]


class CryptoLevel(IntEnum):
    """enum quic_crypto_level: note APP is 0 and INITIAL is 1 (not TLS epoch order)."""

    APP = 0
    INITIAL = 1
    HANDSHAKE = 2
    EARLY = 3


QUIC_CRYPTO_APP = 0
QUIC_CRYPTO_INITIAL = 1
QUIC_CRYPTO_HANDSHAKE = 2
QUIC_CRYPTO_EARLY = 3


class Direction(IntEnum):
    """quic_crypto_secret.send: 0 = receive key, 1 = send key."""

    RECV = 0
    SEND = 1


class QuicEvent(IntEnum):
    """enum quic_event_type: the first byte of an MSG_QUIC_NOTIFICATION (spec §1.5)."""

    NONE = 0
    STREAM_UPDATE = 1
    STREAM_MAX_DATA = 2
    STREAM_MAX_STREAM = 3
    CONNECTION_ID = 4
    CONNECTION_CLOSE = 5
    CONNECTION_MIGRATION = 6
    KEY_UPDATE = 7
    NEW_TOKEN = 8
    NEW_SESSION_TICKET = 9


IPPROTO_QUIC = 261
SOL_QUIC = 288

# enum quic_cmsg_type: cmsg types at SOL_QUIC
QUIC_STREAM_INFO = 0
QUIC_HANDSHAKE_INFO = 1

# quic_crypto_secret.type: the kernel's names for the TLS 1.3 suites
TLS_CIPHER_AES_GCM_128 = 51
TLS_CIPHER_AES_GCM_256 = 52
TLS_CIPHER_AES_CCM_128 = 53
TLS_CIPHER_CHACHA20_POLY1305 = 54

# Option names at SOL_QUIC.
QUIC_SOCKOPT_EVENT = 0
QUIC_SOCKOPT_STREAM_OPEN = 1
QUIC_SOCKOPT_STREAM_RESET = 2
QUIC_SOCKOPT_STREAM_STOP_SENDING = 3
QUIC_SOCKOPT_CONNECTION_ID = 4
QUIC_SOCKOPT_CONNECTION_CLOSE = 5
QUIC_SOCKOPT_CONNECTION_MIGRATION = 6
QUIC_SOCKOPT_KEY_UPDATE = 7
QUIC_SOCKOPT_TRANSPORT_PARAM = 8
QUIC_SOCKOPT_CONFIG = 9
QUIC_SOCKOPT_TOKEN = 10
QUIC_SOCKOPT_ALPN = 11
QUIC_SOCKOPT_SESSION_TICKET = 12
QUIC_SOCKOPT_CRYPTO_SECRET = 13
QUIC_SOCKOPT_TRANSPORT_PARAM_EXT = 14

# Message flags on Linux: the QUIC aliases (csrc/quic_abi.h maps each onto a generic bit),
# then the generic bits the socket API uses.
MSG_QUIC_STREAM_NEW = 0x400  # MSG_SYN
MSG_QUIC_STREAM_FIN = 0x200  # MSG_FIN
MSG_QUIC_STREAM_UNI = 0x800  # MSG_CONFIRM
MSG_QUIC_STREAM_DONTWAIT = 0x10000  # MSG_WAITFORONE
MSG_QUIC_STREAM_SNDBLOCK = 0x2000  # MSG_ERRQUEUE
MSG_QUIC_DATAGRAM = 0x1000  # MSG_RST
MSG_QUIC_NOTIFICATION = 0x8000  # MSG_MORE, only ever returned in msg_flags
MSG_PEEK = 0x2
MSG_CTRUNC = 0x8
MSG_DONTWAIT = 0x40
MSG_EOR = 0x80
MSG_WAITALL = 0x100
MSG_NOSIGNAL = 0x4000
MSG_MORE = 0x8000
MSG_BATCH = 0x40000
