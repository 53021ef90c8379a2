"""Resumption state (RFC 8446 §4.6.1, §8): the client's saved session and the server's
self-encrypted tickets, sealed under the 64-byte key the kernel hands a server socket."""
from __future__ import annotations

import os
import struct
import threading
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .errors import decode_error
from .wire import Reader, Writer, vec

SESSION_FORMAT = 1
TICKET_FORMAT = 1
# RFC 8446 §4.6.1: ticket_lifetime MUST NOT exceed seven days.
MAX_TICKET_LIFETIME = 7 * 24 * 3600
# RFC 9001 §4.6.1: a server that accepts 0-RTT advertises exactly this.
QUIC_MAX_EARLY_DATA = 0xFFFFFFFF
# RFC 8446 §8.3: tolerance on the client's ticket age before 0-RTT is refused.
TICKET_AGE_TOLERANCE_MS = 10_000


@dataclass
class SessionData:
    """What a client keeps from a NewSessionTicket to resume (and maybe send 0-RTT)."""

    ticket: bytes = field(repr=False)
    psk: bytes = field(repr=False)
    cipher_suite: int
    age_add: int
    lifetime: int
    received_at: float
    max_early_data: int = 0
    alpn: bytes | None = None
    server_name: str | None = None
    # Remembered transport parameters for 0-RTT (RFC 9000 §7.4.1); opaque to the engine.
    transport_parameters: bytes = b""

    def expired(self, now: float) -> bool:
        return now - self.received_at >= min(self.lifetime, MAX_TICKET_LIFETIME)

    def obfuscated_age(self, now: float) -> int:
        age_ms = int((now - self.received_at) * 1000)
        return (age_ms + self.age_add) & 0xFFFFFFFF

    def encode(self) -> bytes:
        w = Writer()
        w.u8(SESSION_FORMAT)
        w.vec(2, self.ticket)
        w.vec(1, self.psk)
        w.u16(self.cipher_suite)
        w.u32(self.age_add)
        w.u32(self.lifetime)
        # round, not int: a decoded ms / 1000 times 1000 can fall just below the integer.
        w.raw(round(self.received_at * 1000).to_bytes(8, "big"))
        w.u32(self.max_early_data)
        w.vec(1, self.alpn or b"")
        w.vec(1, (self.server_name or "").encode("ascii"))
        w.vec(2, self.transport_parameters)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> SessionData:
        r = Reader(data)
        if r.u8() != SESSION_FORMAT:
            raise decode_error("unknown session data format")
        ticket = r.vec(2, min_len=1)
        psk = r.vec(1, min_len=1)
        suite = r.u16()
        age_add = r.u32()
        lifetime = r.u32()
        received_ms = r.uint(8)
        if received_ms >= _MAX_EXACT_MS:
            raise decode_error("session data received_at out of range")
        received_at = received_ms / 1000
        max_early = r.u32()
        alpn = r.vec(1) or None
        name = _ascii(r.vec(1), "server name")
        tps = r.vec(2)
        r.expect_end("session data")
        return cls(ticket, psk, suite, age_add, lifetime, received_at, max_early, alpn, name, tps)


# received_at travels as milliseconds in 8 bytes and lives as float seconds: rounded back,
# the count is exact below 2^51 ms (year 73,000); beyond, it would not come back the same,
# nor fit 8 bytes again near 2^64 (found by fuzz/tls_messages: encode() raised OverflowError
# for a session decode() had accepted).
_MAX_EXACT_MS = 1 << 51


def _ascii(raw: bytes, what: str) -> str | None:
    # A non-ASCII name is malformed data like any other: decode_error, not UnicodeDecodeError
    # (HandshakeConfig.session_data callers catch TlsError; found by fuzz/tls_messages).
    try:
        return raw.decode("ascii") or None
    except UnicodeDecodeError:
        raise decode_error(f"{what} is not ASCII") from None


# TicketContents' fixed-size fields, in encode() order: suite, created_ms, age_add,
# lifetime, max_early_data.
_TICKET_SCALARS = struct.Struct(">HQIII")


@dataclass
class TicketContents:
    """The server's view of a ticket once it decrypts."""

    psk: bytes = field(repr=False)
    cipher_suite: int
    created_ms: int
    age_add: int
    lifetime: int
    max_early_data: int
    alpn: bytes | None
    server_name: str | None
    # How the client authenticated in the original handshake: its leaf certificate (DER)
    # or the external PSK identity; reported again on resumption.
    peer_certificate: bytes | None = field(default=None, repr=False)
    psk_identity: bytes | None = None
    nonce: bytes = b""

    def encode(self) -> bytes:
        # One join rather than a Writer call per field: a ticket is sealed per handshake.
        return b"".join((
            vec(1, self.psk),
            _TICKET_SCALARS.pack(self.cipher_suite, self.created_ms, self.age_add, self.lifetime,
                                 self.max_early_data),
            vec(1, self.alpn or b""),
            vec(1, (self.server_name or "").encode("ascii")),
            vec(2, self.peer_certificate or b""),
            vec(2, self.psk_identity or b""),
        ))

    @classmethod
    def decode(cls, data: bytes, nonce: bytes) -> TicketContents:
        r = Reader(data)
        psk = r.vec(1, min_len=1)
        suite = r.u16()
        created = r.uint(8)
        age_add = r.u32()
        lifetime = r.u32()
        max_early = r.u32()
        alpn = r.vec(1) or None
        name = _ascii(r.vec(1), "server name")
        cert = r.vec(2) or None
        ident = r.vec(2) or None
        r.expect_end("ticket")
        return cls(psk, suite, created, age_add, lifetime, max_early, alpn, name, cert, ident, nonce)


class TicketSealer:
    """Encrypts tickets under a server's 64-byte ticket key (spec §2.6: getsockopt
    SESSION_TICKET on an accepted socket). AES-256-GCM under a key HKDF-expanded from it."""

    NONCE_LEN = 12

    def __init__(self, ticket_key: bytes) -> None:
        if len(ticket_key) < 32:
            raise ValueError("ticket key must be at least 32 bytes")
        key = HKDFExpand(hashes.SHA256(), 32, b"quichsd session ticket v1").derive(ticket_key)
        self._aead = AESGCM(key)

    def seal(self, contents: TicketContents) -> bytes:
        nonce = os.urandom(self.NONCE_LEN)
        header = bytes((TICKET_FORMAT,))
        return header + nonce + self._aead.encrypt(nonce, contents.encode(), header)

    def open(self, ticket: bytes) -> TicketContents | None:
        """The contents, or None for a ticket we did not issue (or one that was altered)."""
        if len(ticket) < 1 + self.NONCE_LEN + 16 or ticket[0] != TICKET_FORMAT:
            return None
        nonce = ticket[1 : 1 + self.NONCE_LEN]
        try:
            plain = self._aead.decrypt(nonce, ticket[1 + self.NONCE_LEN :], ticket[:1])
            return TicketContents.decode(plain, nonce)
        except Exception:  # InvalidTag or a decode error: not a ticket of ours
            return None


class SingleUseTickets:
    """Anti-replay for 0-RTT (RFC 8446 §8.1): each ticket may carry early data once.

    Remembers ticket nonces until the ticket expires. Scope is this object: every TlsConfig
    with the same ticket key shares one in a process. Separate processes do not share it,
    so a ticket can be replayed once per process; a deployment with several workers should
    route a client to one worker or turn 0-RTT off.
    """

    def __init__(self) -> None:
        self._used: dict[bytes, float] = {}
        # The check and the record are one step: a worker runs handshakes in threads, and
        # two of them racing with the same ticket must not both be told "first".
        self._lock = threading.Lock()

    def first_use(self, nonce: bytes, expires_at: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            if len(self._used) > 1024:
                self._used = {k: v for k, v in self._used.items() if v > now}
            if nonce in self._used and self._used[nonce] > now:
                return False
            self._used[nonce] = expires_at
            return True
