"""Stateless address-validation tokens (RFC 9000 §8.1.2, §8.1.3, §8.1.4).

A server that has kept nothing about a client can still tell, when the client's Initial
comes back with a token, that the client received what the server sent to its address:
the token is sealed with a key only the server holds, over the address, the time of issue
and the client's original Destination Connection ID. Two kinds, told apart by a clear
first byte with the kernel's values (QUIC_TOKEN_FLAG_REGULAR 0, QUIC_TOKEN_FLAG_RETRY 1):

- RETRY tokens travel in a Retry packet and come back at once: short lifetime (3 s, the
  kernel's QUIC_TOKEN_TIMEOUT_RETRY); they carry the original DCID, which the server
  echoes in original_destination_connection_id (§7.3).
- REGULAR tokens travel in NEW_TOKEN frames for a later connection: longer lifetime
  (600 s, the kernel's QUIC_TOKEN_TIMEOUT_REGULAR).

Both are bound to the client's full address *including the port*, as the kernel binds
them (spec kernel-quic-abi §1.4): a client reusing a NEW_TOKEN token must reconnect from
the same local port. RFC 9000 §8.1.3 would allow a port change; the kernel does not.

Layout: kind (1) | nonce (12) | AES-128-GCM(issued_us (8) | odcid (0..20)) | tag (16),
with kind and the packed address as associated data: 37 bytes plus the DCID (45 for an
8-byte DCID, 57 at most), inside the kernel's 120-byte token limit. The nonce is random
(a timestamp, as the kernel uses, could repeat under one key within a microsecond).
"""
from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "TokenKind",
    "ValidToken",
    "AddressTokens",
    "address_bytes",
    "RETRY_LIFETIME",
    "REGULAR_LIFETIME",
    "MAX_TOKEN_LEN",
]

RETRY_LIFETIME = 3.0  # seconds (QUIC_TOKEN_TIMEOUT_RETRY)
REGULAR_LIFETIME = 600.0  # seconds (QUIC_TOKEN_TIMEOUT_REGULAR)
MAX_TOKEN_LEN = 120  # QUIC_TOKEN_MAX_LEN: what a kernel client accepts
_NONCE_LEN = 12
_TAG_LEN = 16
_TIME = struct.Struct(">Q")
_MAX_CID = 20
_MIN_LEN = 1 + _NONCE_LEN + _TIME.size + _TAG_LEN
_MAX_LEN = _MIN_LEN + _MAX_CID


class TokenKind(IntEnum):
    REGULAR = 0  # from a NEW_TOKEN frame
    RETRY = 1  # from a Retry packet


@dataclass(frozen=True, slots=True)
class ValidToken:
    kind: TokenKind
    original_dcid: bytes  # the client's first DCID (RETRY); the DCID it was issued under (REGULAR)
    issued: float


def address_bytes(addr: Any) -> bytes:
    """The packed IP address and port of a socket address tuple (IPv4-mapped IPv6
    addresses pack as the IPv4 address they carry, so one client is one address)."""
    host, port = addr[0], int(addr[1])
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
        if packed[:12] == b"\0" * 10 + b"\xff\xff":
            packed = packed[12:]
    except OSError:
        packed = socket.inet_pton(socket.AF_INET, host)
    return packed + port.to_bytes(2, "big")


class AddressTokens:
    """Issues and checks tokens under one random key (one per endpoint: tokens die with it)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = AESGCM(key if key is not None else AESGCM.generate_key(128))

    def issue(self, kind: TokenKind, addr: Any, original_dcid: bytes, now: float) -> bytes:
        if len(original_dcid) > _MAX_CID:
            raise ValueError("connection ID over 20 bytes")
        head = bytes((kind,))
        nonce = os.urandom(_NONCE_LEN)
        plain = _TIME.pack(int(now * 1e6)) + original_dcid
        return head + nonce + self._aead.encrypt(nonce, plain, head + address_bytes(addr))

    def check(self, token: bytes, addr: Any, now: float) -> ValidToken | None:
        """The token's content if it is ours, for this address (and port), and not
        expired; else None. `kind_of(token)` tells what the client believes it holds."""
        if not _MIN_LEN <= len(token) <= _MAX_LEN:
            return None
        kind = kind_of(token)
        if kind is None:
            return None
        nonce = token[1:1 + _NONCE_LEN]
        try:
            plain = self._aead.decrypt(nonce, token[1 + _NONCE_LEN:], token[:1] + address_bytes(addr))
        except (InvalidTag, OSError, ValueError):
            return None
        issued = _TIME.unpack_from(plain)[0] / 1e6
        lifetime = RETRY_LIFETIME if kind is TokenKind.RETRY else REGULAR_LIFETIME
        if issued > now + 1.0 or now - issued > lifetime:  # 1 s of clock slack forward
            return None
        return ValidToken(kind, plain[_TIME.size:], issued)


def kind_of(token: bytes) -> TokenKind | None:
    """What a token claims to be (its clear first byte), None for anything else."""
    if not token:
        return None
    try:
        return TokenKind(token[0])
    except ValueError:
        return None


__all__ += ["kind_of"]
