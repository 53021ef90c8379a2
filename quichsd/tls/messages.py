"""TLS 1.3 handshake messages (RFC 8446 §4): dataclasses, encode and decode.

Extension blocks stay as ordered {type: body} dicts so a message re-serialises byte for
byte; extensions.py decodes the bodies the engine needs, when it needs them.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Union

from .constants import (
    AlertDescription,
    HELLO_RETRY_REQUEST_RANDOM,
    LEGACY_VERSION,
    ExtensionType,
    HandshakeType,
)
from .errors import TlsError, decode_error, illegal_parameter, unexpected_message
from .wire import Reader, Writer

Extensions = dict[int, bytes]
_U16 = struct.Struct(">H")
_EXT_HEADER = struct.Struct(">HH")

# RFC 8446 §4: a message body is at most 2^24-1 bytes; we refuse anything this large anyway
# long before, to bound buffering (a certificate chain of 64 KiB is already generous).
MAX_MESSAGE_SIZE = 1 << 17


def decode_extensions(r: Reader, *, psk_last: bool = False) -> Extensions:
    """RFC 8446 §4.2: no duplicates; in a ClientHello pre_shared_key must come last."""
    # Hot path of every hello: walks the block by index rather than through Reader calls.
    data, pos = r.data, r.pos
    if pos + 2 > r.end:
        raise decode_error("truncated extension block")
    end = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if end > r.end:
        raise decode_error("truncated extension block")
    pos += 2
    exts: Extensions = {}
    while pos < end:
        if pos + 4 > end:
            raise decode_error("truncated extension header")
        ext_type = (data[pos] << 8) | data[pos + 1]
        body_end = pos + 4 + ((data[pos + 2] << 8) | data[pos + 3])
        if body_end > end:
            raise decode_error("truncated extension")
        if ext_type in exts:
            raise illegal_parameter(f"duplicate extension {ext_type}")
        exts[ext_type] = data[pos + 4 : body_end]
        pos = body_end
    r.pos = end
    if psk_last and ExtensionType.PRE_SHARED_KEY in exts:
        if next(reversed(exts)) != ExtensionType.PRE_SHARED_KEY:
            raise illegal_parameter("pre_shared_key is not the last extension")
    return exts


def extensions_block(exts: Extensions) -> bytes:
    """The encoded block: a 16-bit length, then type, length and body of each."""
    parts = []
    for ext_type, data in exts.items():
        parts.append(_EXT_HEADER.pack(ext_type, len(data)))
        parts.append(data)
    body = b"".join(parts)
    return _U16.pack(len(body)) + body


def encode_extensions(w: Writer, exts: Extensions) -> None:
    w.raw(extensions_block(exts))


def frame(msg_type: int, body: bytes) -> bytes:
    """Prefix a body with its 4-byte handshake header."""
    return bytes((msg_type,)) + len(body).to_bytes(3, "big") + body


class HandshakeMessage:
    msg_type: ClassVar[HandshakeType]

    def encode_body(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The message with its 4-byte handshake header, as it enters the transcript."""
        return frame(self.msg_type, self.encode_body())


@dataclass
class ClientHello(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.CLIENT_HELLO
    random: bytes
    cipher_suites: list[int]
    extensions: Extensions
    legacy_session_id: bytes = b""
    legacy_compression_methods: bytes = b"\x00"
    legacy_version: int = LEGACY_VERSION

    def encode_body(self) -> bytes:
        suites = self.cipher_suites
        sid, comp = self.legacy_session_id, self.legacy_compression_methods
        return b"".join((
            _U16.pack(self.legacy_version), self.random,
            bytes((len(sid),)), sid,
            struct.pack(f">H{len(suites)}H", 2 * len(suites), *suites),
            bytes((len(comp),)), comp,
            extensions_block(self.extensions),
        ))

    @classmethod
    def decode(cls, r: Reader) -> ClientHello:
        legacy_version = r.u16()
        random = r.bytes(32)
        session_id = r.vec(1, max_len=32)
        suites = r.u16_list(2, min_len=2)
        compression = r.vec(1, min_len=1)
        # A hello without an extension block is TLS 1.2 or older: nothing for us.
        if r.eof():
            raise TlsError(AlertDescription.protocol_version, "ClientHello without extensions")
        exts = decode_extensions(r, psk_last=True)
        return cls(random, suites, exts, session_id, compression, legacy_version)

    def binder_prefix(self) -> bytes:
        """The encoded message cut before the binders list (RFC 8446 §4.2.11.2)."""
        full = self.encode()
        binders_len = _binders_list_length(self.extensions[ExtensionType.PRE_SHARED_KEY])
        return full[: len(full) - binders_len]


def _binders_list_length(psk_ext: bytes) -> int:
    r = Reader(psk_ext)
    r.sub(2)  # identities
    return r.remaining()


@dataclass
class ServerHello(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.SERVER_HELLO
    random: bytes
    cipher_suite: int
    extensions: Extensions
    legacy_session_id_echo: bytes = b""
    legacy_compression_method: int = 0
    legacy_version: int = LEGACY_VERSION

    @property
    def is_hello_retry_request(self) -> bool:
        return self.random == HELLO_RETRY_REQUEST_RANDOM

    def encode_body(self) -> bytes:
        sid = self.legacy_session_id_echo
        return b"".join((
            _U16.pack(self.legacy_version), self.random, bytes((len(sid),)), sid,
            _U16.pack(self.cipher_suite), bytes((self.legacy_compression_method,)),
            extensions_block(self.extensions),
        ))

    @classmethod
    def decode(cls, r: Reader) -> ServerHello:
        legacy_version = r.u16()
        random = r.bytes(32)
        session_id = r.vec(1, max_len=32)
        suite = r.u16()
        compression = r.u8()
        if r.eof():
            raise TlsError(AlertDescription.protocol_version, "ServerHello without extensions")
        exts = decode_extensions(r)
        return cls(random, suite, exts, session_id, compression, legacy_version)


@dataclass
class EncryptedExtensions(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.ENCRYPTED_EXTENSIONS
    extensions: Extensions

    def encode_body(self) -> bytes:
        w = Writer()
        encode_extensions(w, self.extensions)
        return w.getvalue()

    @classmethod
    def decode(cls, r: Reader) -> EncryptedExtensions:
        return cls(decode_extensions(r))


@dataclass
class CertificateRequest(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.CERTIFICATE_REQUEST
    context: bytes
    extensions: Extensions

    def encode_body(self) -> bytes:
        w = Writer()
        w.vec(1, self.context)
        encode_extensions(w, self.extensions)
        return w.getvalue()

    @classmethod
    def decode(cls, r: Reader) -> CertificateRequest:
        return cls(r.vec(1), decode_extensions(r))


@dataclass
class CertificateEntry:
    cert_data: bytes
    extensions: Extensions = field(default_factory=dict)


@dataclass
class Certificate(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.CERTIFICATE
    context: bytes
    entries: list[CertificateEntry]

    def encode_body(self) -> bytes:
        w = Writer()
        w.vec(1, self.context)
        entries = Writer()
        for entry in self.entries:
            entries.vec(3, entry.cert_data)
            encode_extensions(entries, entry.extensions)
        w.vec(3, entries.getvalue())
        return w.getvalue()

    @classmethod
    def decode(cls, r: Reader) -> Certificate:
        context = r.vec(1)
        lst = r.sub(3)
        entries = []
        while not lst.eof():
            cert = lst.vec(3, min_len=1)
            entries.append(CertificateEntry(cert, decode_extensions(lst)))
        return cls(context, entries)


@dataclass
class CertificateVerify(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.CERTIFICATE_VERIFY
    scheme: int
    signature: bytes

    def encode_body(self) -> bytes:
        w = Writer()
        w.u16(self.scheme)
        w.vec(2, self.signature)
        return w.getvalue()

    @classmethod
    def decode(cls, r: Reader) -> CertificateVerify:
        return cls(r.u16(), r.vec(2))


@dataclass
class Finished(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.FINISHED
    verify_data: bytes

    def encode_body(self) -> bytes:
        return self.verify_data

    @classmethod
    def decode(cls, r: Reader) -> Finished:
        return cls(r.bytes(r.remaining()))


@dataclass
class NewSessionTicket(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.NEW_SESSION_TICKET
    lifetime: int
    age_add: int
    nonce: bytes
    ticket: bytes
    extensions: Extensions = field(default_factory=dict)

    def encode_body(self) -> bytes:
        w = Writer()
        w.u32(self.lifetime)
        w.u32(self.age_add)
        w.vec(1, self.nonce)
        w.vec(2, self.ticket)
        encode_extensions(w, self.extensions)
        return w.getvalue()

    @classmethod
    def decode(cls, r: Reader) -> NewSessionTicket:
        lifetime = r.u32()
        age_add = r.u32()
        nonce = r.vec(1)
        ticket = r.vec(2, min_len=1)
        return cls(lifetime, age_add, nonce, ticket, decode_extensions(r))


@dataclass
class EndOfEarlyData(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.END_OF_EARLY_DATA

    def encode_body(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, r: Reader) -> EndOfEarlyData:
        return cls()


@dataclass
class KeyUpdate(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.KEY_UPDATE
    request_update: int

    def encode_body(self) -> bytes:
        return bytes((self.request_update,))

    @classmethod
    def decode(cls, r: Reader) -> KeyUpdate:
        value = r.u8()
        if value > 1:
            raise illegal_parameter("KeyUpdate request_update not 0 or 1")
        return cls(value)


MESSAGE_TYPES = (
    ClientHello,
    ServerHello,
    EncryptedExtensions,
    CertificateRequest,
    Certificate,
    CertificateVerify,
    Finished,
    NewSessionTicket,
    EndOfEarlyData,
    KeyUpdate,
)
Message = Union[MESSAGE_TYPES]  # type: ignore[valid-type]
MESSAGE_CLASSES: dict[int, type[HandshakeMessage]] = {cls.msg_type: cls for cls in MESSAGE_TYPES}


def decode_body(msg_type: int, body: bytes) -> Message:
    """Decode one message body; the whole body must be consumed."""
    cls = MESSAGE_CLASSES.get(msg_type)
    if cls is None:
        raise unexpected_message(f"unknown handshake message type {msg_type}")
    r = Reader(body)
    msg = cls.decode(r)
    r.expect_end(cls.__name__)
    return msg


def decode_message(data: bytes) -> Message:
    """Decode one complete message with its 4-byte header."""
    if len(data) < 4:
        raise decode_error("truncated handshake header")
    length = int.from_bytes(data[1:4], "big")
    if length != len(data) - 4:
        raise decode_error("handshake length does not match")
    return decode_body(data[0], data[4:])


class MessageBuffer:
    """Reassembles one level's CRYPTO byte stream into whole handshake messages.

    The kernel hands the stream over in arbitrary chunks (spec §2.2); messages can span
    chunks and chunks can hold several messages.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Append data; return every complete message (header included) now available."""
        buf = self._buf
        if buf:
            buf += data
            src: bytes | bytearray = buf
        else:
            src = bytes(data)  # common case: whole messages, no copy into the buffer
        out = []
        pos = 0
        n = len(src)
        while n - pos >= 4:
            length = (src[pos + 1] << 16) | (src[pos + 2] << 8) | src[pos + 3]
            if length > MAX_MESSAGE_SIZE:
                raise illegal_parameter(f"handshake message of {length} bytes is over our limit")
            end = pos + 4 + length
            if end > n:
                break
            out.append(bytes(src[pos:end]) if src is buf else src[pos:end])
            pos = end
        if src is buf:
            del buf[:pos]
        elif pos < n:
            buf += src[pos:]
        return out
