"""TLS 1.3 handshake messages (RFC 8446 §4): dataclasses, encode and decode.

Extension blocks stay as ordered {type: body} dicts so a message re-serialises byte for
byte; extensions.py decodes the bodies the engine needs, when it needs them.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

from .constants import (
    HELLO_RETRY_REQUEST_RANDOM,
    LEGACY_VERSION,
    AlertDescription,
    ExtensionType,
    HandshakeType,
)
from .errors import TlsError, decode_error, illegal_parameter, unexpected_message
from .wire import Reader, Writer, vec

Extensions = dict[int, bytes]
_U16 = struct.Struct(">H")
_EXT_HEADER = struct.Struct(">HH")
_EXT_HEADER_AT = _EXT_HEADER.unpack_from
_HEADER = struct.Struct(">I")
_NST_SCALARS = struct.Struct(">II")  # NewSessionTicket: ticket_lifetime, ticket_age_add
_PSK = int(ExtensionType.PRE_SHARED_KEY)
_CLIENT_HELLO = int(HandshakeType.CLIENT_HELLO)
_SERVER_HELLO = int(HandshakeType.SERVER_HELLO)
_CERTIFICATE_VERIFY = int(HandshakeType.CERTIFICATE_VERIFY)
_FINISHED = int(HandshakeType.FINISHED)
_ENCRYPTED_EXTENSIONS = int(HandshakeType.ENCRYPTED_EXTENSIONS)

# RFC 8446 §4: a message body is at most 2^24-1 bytes; we refuse anything this large anyway
# long before, to bound buffering (a certificate chain of 64 KiB is already generous).
MAX_MESSAGE_SIZE = 1 << 17


def extensions_at(data: bytes, pos: int, limit: int, psk_last: bool = False) -> tuple[Extensions, int]:
    """The extension block at `pos` (not past `limit`) and the offset after it.

    RFC 8446 §4.2: no duplicates; in a ClientHello pre_shared_key must come last.
    """
    # Hot path of every message that has a block: indexes the bytes, no Reader calls.
    if pos + 2 > limit:
        raise decode_error("truncated extension block")
    end = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if end > limit:
        raise decode_error("truncated extension block")
    pos += 2
    exts: Extensions = {}
    header = _EXT_HEADER_AT
    while pos < end:
        if pos + 4 > end:
            raise decode_error("truncated extension header")
        ext_type, n = header(data, pos)
        start = pos + 4
        pos = start + n
        if pos > end:
            raise decode_error("truncated extension")
        if ext_type in exts:
            raise illegal_parameter(f"duplicate extension {ext_type}")
        exts[ext_type] = data[start:pos]
    if psk_last and _PSK in exts and next(reversed(exts)) != _PSK:
        raise illegal_parameter("pre_shared_key is not the last extension")
    return exts, end


def decode_extensions(r: Reader, *, psk_last: bool = False) -> Extensions:
    exts, r.pos = extensions_at(r.data, r.pos, r.end, psk_last)
    return exts


def extensions_body(exts: Extensions) -> bytes:
    """Type, length and body of each extension, without the block's length."""
    pack = _EXT_HEADER.pack
    return b"".join([pack(ext_type, len(data)) + data for ext_type, data in exts.items()])


def extension(ext_type: int, data: bytes) -> bytes:
    """One encoded extension: type, 16-bit length, body (RFC 8446 §4.2)."""
    return _EXT_HEADER.pack(ext_type, len(data)) + data


def extensions_block(exts: Extensions) -> bytes:
    """The encoded block: a 16-bit length, then type, length and body of each."""
    body = extensions_body(exts)
    return _U16.pack(len(body)) + body


def encode_extensions(w: Writer, exts: Extensions) -> None:
    w.raw(extensions_block(exts))


def frame(msg_type: int, body: bytes) -> bytes:
    """Prefix a body with its 4-byte handshake header (RFC 8446 §4: type, uint24 length)."""
    n = len(body)
    if n > 0xFFFFFF:
        raise ValueError("handshake message body over 2^24-1 bytes")
    return _HEADER.pack((msg_type << 24) | n) + body


def _client_hello_body(random: bytes, session_id: bytes, suites_vec: bytes, compression: bytes,
                       ext_body: bytes, legacy_version: int) -> bytes:
    return b"".join((
        _U16.pack(legacy_version), random, bytes((len(session_id),)), session_id, suites_vec,
        bytes((len(compression),)), compression, _U16.pack(len(ext_body)), ext_body,
    ))


def encode_client_hello(random: bytes, suites_vec: bytes, ext_body: bytes, session_id: bytes = b"",
                        compression: bytes = b"\x00", legacy_version: int = LEGACY_VERSION) -> bytes:
    """A whole ClientHello (RFC 8446 §4.1.2) from its parts: `suites_vec` carries its
    length prefix, `ext_body` is the extension block without its length."""
    return frame(_CLIENT_HELLO, _client_hello_body(random, session_id, suites_vec, compression,
                                                   ext_body, legacy_version))


def _server_hello_body(random: bytes, cipher_suite: int, ext_body: bytes, session_id: bytes,
                       compression: int, legacy_version: int) -> bytes:
    return b"".join((
        _U16.pack(legacy_version), random, bytes((len(session_id),)), session_id,
        _U16.pack(cipher_suite), bytes((compression,)), _U16.pack(len(ext_body)), ext_body,
    ))


def encode_server_hello(random: bytes, cipher_suite: int, ext_body: bytes, session_id: bytes = b"",
                        compression: int = 0, legacy_version: int = LEGACY_VERSION) -> bytes:
    """A whole ServerHello (RFC 8446 §4.1.3); `ext_body` as for encode_client_hello."""
    return frame(_SERVER_HELLO, _server_hello_body(random, cipher_suite, ext_body, session_id,
                                                   compression, legacy_version))


def encode_encrypted_extensions(ext_body: bytes) -> bytes:
    """RFC 8446 §4.3.1: the body is the extension block alone."""
    return frame(_ENCRYPTED_EXTENSIONS, _U16.pack(len(ext_body)) + ext_body)


def encode_finished(verify_data: bytes) -> bytes:
    """RFC 8446 §4.4.4: the body is verify_data alone."""
    return frame(_FINISHED, verify_data)


def encode_certificate_verify(scheme: int, signature: bytes) -> bytes:
    """RFC 8446 §4.4.3: SignatureScheme, then the signature as opaque<0..2^16-1>."""
    n = len(signature)
    if n > 0xFFFF:
        raise ValueError("signature over 2^16-1 bytes")
    return frame(_CERTIFICATE_VERIFY, _EXT_HEADER.pack(scheme, n) + signature)


def suites_vector(suites: Sequence[int]) -> bytes:
    return struct.pack(f">H{len(suites)}H", 2 * len(suites), *suites)


class HandshakeMessage:
    msg_type: ClassVar[HandshakeType]

    def encode_body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls, r: Reader) -> Self:
        """The message whose body `r` holds (each message type reads its own)."""
        raise NotImplementedError

    def encode(self) -> bytes:
        """The message with its 4-byte handshake header, as it enters the transcript."""
        return frame(self.msg_type, self.encode_body())


# The decoders: (data, pos, end) -> (message, offset after it). They index the bytes
# directly (a measured share of the handshake's Python cost went to Reader calls), and
# every short or inconsistent length is decode_error, as through Reader.

def _vec8(data: bytes, pos: int, end: int, min_len: int, max_len: int) -> tuple[bytes, int]:
    if pos >= end:
        raise decode_error("truncated")
    n = data[pos]
    if n < min_len or n > max_len:
        raise decode_error(f"vector length {n} out of range")
    stop = pos + 1 + n
    if stop > end:
        raise decode_error("truncated")
    return data[pos + 1 : stop], stop


def _vec16(data: bytes, pos: int, end: int, min_len: int) -> tuple[bytes, int]:
    start = pos + 2
    if start > end:
        raise decode_error("truncated")
    n = (data[pos] << 8) | data[pos + 1]
    if n < min_len:
        raise decode_error(f"vector length {n} out of range")
    stop = start + n
    if stop > end:
        raise decode_error("truncated")
    return data[start:stop], stop


def _decode_client_hello(data: bytes, pos: int, end: int) -> tuple[ClientHello, int]:
    if pos + 34 > end:
        raise decode_error("truncated")
    legacy_version = (data[pos] << 8) | data[pos + 1]
    random = data[pos + 2 : pos + 34]
    session_id, pos = _vec8(data, pos + 34, end, 0, 32)
    raw_suites, pos = _vec16(data, pos, end, 2)
    if len(raw_suites) % 2:
        raise decode_error("odd length in a list of 16-bit values")
    compression, pos = _vec8(data, pos, end, 1, 255)
    # A hello without an extension block is TLS 1.2 or older: nothing for us.
    if pos >= end:
        raise TlsError(AlertDescription.protocol_version, "ClientHello without extensions")
    exts, pos = extensions_at(data, pos, end, True)
    suites = list(struct.unpack(f">{len(raw_suites) // 2}H", raw_suites))
    return ClientHello(random, suites, exts, session_id, compression, legacy_version), pos


def _decode_server_hello(data: bytes, pos: int, end: int) -> tuple[ServerHello, int]:
    if pos + 34 > end:
        raise decode_error("truncated")
    legacy_version = (data[pos] << 8) | data[pos + 1]
    random = data[pos + 2 : pos + 34]
    session_id, pos = _vec8(data, pos + 34, end, 0, 32)
    if pos + 3 > end:
        raise decode_error("truncated")
    suite = (data[pos] << 8) | data[pos + 1]
    compression = data[pos + 2]
    pos += 3
    if pos >= end:
        raise TlsError(AlertDescription.protocol_version, "ServerHello without extensions")
    exts, pos = extensions_at(data, pos, end)
    return ServerHello(random, suite, exts, session_id, compression, legacy_version), pos


def _decode_encrypted_extensions(data: bytes, pos: int, end: int) -> tuple[EncryptedExtensions, int]:
    exts, pos = extensions_at(data, pos, end)
    return EncryptedExtensions(exts), pos


def _decode_certificate(data: bytes, pos: int, end: int) -> tuple[Certificate, int]:
    context, pos = _vec8(data, pos, end, 0, 255)
    if pos + 3 > end:
        raise decode_error("truncated")
    list_end = pos + 3 + ((data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2])
    if list_end > end:
        raise decode_error("truncated")
    pos += 3
    entries = []
    while pos < list_end:
        if pos + 3 > list_end:
            raise decode_error("truncated")
        n = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
        if n < 1:
            raise decode_error(f"vector length {n} out of range")
        cert_end = pos + 3 + n
        if cert_end > list_end:
            raise decode_error("truncated")
        exts, next_pos = extensions_at(data, cert_end, list_end)
        entries.append(CertificateEntry(data[pos + 3 : cert_end], exts))
        pos = next_pos
    return Certificate(context, entries), list_end


def _decode_certificate_verify(data: bytes, pos: int, end: int) -> tuple[CertificateVerify, int]:
    if pos + 2 > end:
        raise decode_error("truncated")
    scheme = (data[pos] << 8) | data[pos + 1]
    signature, pos = _vec16(data, pos + 2, end, 0)
    return CertificateVerify(scheme, signature), pos


def _decode_finished(data: bytes, pos: int, end: int) -> tuple[Finished, int]:
    return Finished(data[pos:end]), end


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
        return _client_hello_body(
            self.random, self.legacy_session_id, suites_vector(self.cipher_suites),
            self.legacy_compression_methods, extensions_body(self.extensions), self.legacy_version,
        )

    @classmethod
    def decode(cls, r: Reader) -> ClientHello:
        msg, r.pos = _decode_client_hello(r.data, r.pos, r.end)
        return msg

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
        return _server_hello_body(
            self.random, self.cipher_suite, extensions_body(self.extensions),
            self.legacy_session_id_echo, self.legacy_compression_method, self.legacy_version,
        )

    @classmethod
    def decode(cls, r: Reader) -> ServerHello:
        msg, r.pos = _decode_server_hello(r.data, r.pos, r.end)
        return msg


@dataclass
class EncryptedExtensions(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.ENCRYPTED_EXTENSIONS
    extensions: Extensions

    def encode_body(self) -> bytes:
        return extensions_block(self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> EncryptedExtensions:
        msg, r.pos = _decode_encrypted_extensions(r.data, r.pos, r.end)
        return msg


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
        msg, r.pos = _decode_certificate(r.data, r.pos, r.end)
        return msg


@dataclass
class CertificateVerify(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.CERTIFICATE_VERIFY
    scheme: int
    signature: bytes

    def encode_body(self) -> bytes:
        return self.encode()[4:]

    def encode(self) -> bytes:
        return encode_certificate_verify(self.scheme, self.signature)

    @classmethod
    def decode(cls, r: Reader) -> CertificateVerify:
        msg, r.pos = _decode_certificate_verify(r.data, r.pos, r.end)
        return msg


@dataclass
class Finished(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.FINISHED
    verify_data: bytes

    def encode_body(self) -> bytes:
        return self.verify_data

    @classmethod
    def decode(cls, r: Reader) -> Finished:
        msg, r.pos = _decode_finished(r.data, r.pos, r.end)
        return msg


@dataclass
class NewSessionTicket(HandshakeMessage):
    msg_type: ClassVar[HandshakeType] = HandshakeType.NEW_SESSION_TICKET
    lifetime: int
    age_add: int
    nonce: bytes
    ticket: bytes
    extensions: Extensions = field(default_factory=dict)

    def encode_body(self) -> bytes:
        # RFC 8446 §4.6.1; a server sends one per connection, so no Writer calls.
        return b"".join((
            _NST_SCALARS.pack(self.lifetime, self.age_add), vec(1, self.nonce), vec(2, self.ticket),
            extensions_block(self.extensions),
        ))

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
MESSAGE_CLASSES: dict[int, type[HandshakeMessage]] = {cls.msg_type: cls for cls in MESSAGE_TYPES}

Decoder = Callable[[bytes, int, int], tuple[HandshakeMessage, int]]


def _reader_decoder(cls: type[HandshakeMessage]) -> Decoder:
    def decode(data: bytes, pos: int, end: int) -> tuple[HandshakeMessage, int]:
        r = Reader(data, pos, end)
        msg = cls.decode(r)
        return msg, r.pos

    return decode


# msg_type -> (decoder, name for errors): the messages of every handshake go straight to
# their index-based decoder, the rarer ones through their Reader-based classmethod.
DECODERS: dict[int, tuple[Decoder, str]] = {
    cls.msg_type: (_reader_decoder(cls), cls.__name__) for cls in MESSAGE_TYPES
}
DECODERS.update({
    _CLIENT_HELLO: (_decode_client_hello, "ClientHello"),
    _SERVER_HELLO: (_decode_server_hello, "ServerHello"),
    _ENCRYPTED_EXTENSIONS: (_decode_encrypted_extensions, "EncryptedExtensions"),
    int(HandshakeType.CERTIFICATE): (_decode_certificate, "Certificate"),
    _CERTIFICATE_VERIFY: (_decode_certificate_verify, "CertificateVerify"),
    _FINISHED: (_decode_finished, "Finished"),
})


def decode_at(msg_type: int, data: bytes, pos: int) -> HandshakeMessage:
    """Decode the body of a `msg_type` message that runs from `pos` to the end of `data`;
    the whole body must be consumed."""
    entry = DECODERS.get(msg_type)
    if entry is None:
        raise unexpected_message(f"unknown handshake message type {msg_type}")
    end = len(data)
    msg, pos = entry[0](data, pos, end)
    if pos != end:
        raise decode_error(f"{end - pos} trailing bytes in {entry[1]}")
    return msg


def decode_message(data: bytes) -> HandshakeMessage:
    """Decode one complete message with its 4-byte header."""
    if len(data) < 4:
        raise decode_error("truncated handshake header")
    length = int.from_bytes(data[1:4], "big")
    if length != len(data) - 4:
        raise decode_error("handshake length does not match")
    return decode_at(data[0], data, 4)


class MessageBuffer:
    """Reassembles one level's CRYPTO byte stream into whole handshake messages.

    The kernel hands the stream over in arbitrary chunks (spec §2.2); messages can span
    chunks and chunks can hold several messages. Only an incomplete tail is copied, into
    `pending`; chunks of whole messages are sliced as they are.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: bytearray | None = None

    def __len__(self) -> int:
        return 0 if self.pending is None else len(self.pending)

    def feed(self, data: bytes) -> list[bytes]:
        """Append data; return every complete message (header included) now available."""
        pending = self.pending
        if pending is None and type(data) is bytes and len(data) >= 4:
            length = (data[1] << 16) | (data[2] << 8) | data[3]
            if length + 4 == len(data) and length <= MAX_MESSAGE_SIZE:
                return [data]  # the common case: one whole message, nothing to copy
        if pending is not None:
            pending += data
            src: bytes | bytearray = pending
        else:
            src = data if type(data) is bytes else bytes(data)
        n = len(src)
        out: list[bytes] = []
        pos = 0
        while n - pos >= 4:
            length = (src[pos + 1] << 16) | (src[pos + 2] << 8) | src[pos + 3]
            if length > MAX_MESSAGE_SIZE:
                raise illegal_parameter(f"handshake message of {length} bytes is over our limit")
            end = pos + 4 + length
            if end > n:
                break
            # A bytes slice of the whole chunk is the chunk itself: no copy in the common case.
            piece = src[pos:end]
            out.append(piece if type(piece) is bytes else bytes(piece))
            pos = end
        if pending is not None:
            del pending[:pos]
            if not pending:
                self.pending = None
        elif pos < n:
            self.pending = bytearray(src[pos:])
        return out
