"""Typed codecs for the extension bodies the engine reads and writes (RFC 8446 §4.2)."""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .constants import TLS13_VERSION, AlertDescription, ExtensionType
from .errors import TlsError, decode_error, illegal_parameter
from .wire import Reader, Writer

_U16 = struct.Struct(">H")
_U16_PAIR = struct.Struct(">HH")


def _finish(r: Reader, what: str) -> None:
    r.expect_end(what)


# The decoders below run on every hello; they index the bytes directly rather than go
# through Reader calls (a measured share of the handshake's Python cost).
def _outer(data: bytes, width: int, min_len: int, what: str) -> bytes:
    """The body of an extension that is one length-prefixed vector, exactly."""
    n = len(data)
    if n < width:
        raise decode_error(f"truncated {what}")
    length = data[0] if width == 1 else (data[0] << 8) | data[1]
    if length != n - width:
        raise decode_error(f"{what} length does not match")
    if length < min_len:
        raise decode_error(f"{what} shorter than {min_len}")
    return data[width:]


_U16_ARRAYS: dict[int, struct.Struct] = {}


def _u16s(body: bytes, what: str) -> list[int]:
    n = len(body)
    if n % 2:
        raise decode_error(f"odd length in {what}")
    unpacker = _U16_ARRAYS.get(n)
    if unpacker is None:
        unpacker = struct.Struct(f">{n // 2}H")
        if n <= 256:  # the lists of real hellos; a peer must not grow this without bound
            _U16_ARRAYS[n] = unpacker
    return list(unpacker.unpack(body))


# server_name, RFC 6066 §3: a list of (type, name); we read and write host_name (0) only.
def encode_server_name(host: str) -> bytes:
    name = host.encode("ascii")
    entry = b"\x00" + len(name).to_bytes(2, "big") + name
    return len(entry).to_bytes(2, "big") + entry


def decode_server_name(data: bytes) -> str | None:
    body = _outer(data, 2, 1, "server_name")
    host = None
    pos, end = 0, len(body)
    while pos < end:
        if pos + 3 > end:
            raise decode_error("truncated server_name entry")
        name_type = body[pos]
        name_end = pos + 3 + ((body[pos + 1] << 8) | body[pos + 2])
        if name_end > end or name_end == pos + 3:
            raise decode_error("bad server_name entry length")
        name = body[pos + 3 : name_end]
        pos = name_end
        if name_type == 0:
            if host is not None:
                raise illegal_parameter("two host_name entries")
            if len(name) > 255:
                # No DNS name is this long (RFC 1035 §2.3.4); it would not fit a ticket either.
                raise TlsError(AlertDescription.unrecognized_name, "host_name over 255 bytes")
            try:
                host = name.decode("ascii")
            except UnicodeDecodeError:
                raise illegal_parameter("server_name is not ASCII") from None
    return host


def encode_u16_list(values: Sequence[int]) -> bytes:
    w = Writer()
    w.u16_list(2, values)
    return w.getvalue()


def decode_u16_list(data: bytes, what: str) -> list[int]:
    """supported_groups, signature_algorithms(_cert): non-empty 16-bit lists."""
    return _u16s(_outer(data, 2, 2, what), what)


# ALPN, RFC 7301 §3.1.
def encode_alpn(protocols: Sequence[bytes]) -> bytes:
    body = b"".join(len(p).to_bytes(1, "big") + p for p in protocols)
    return len(body).to_bytes(2, "big") + body


def decode_alpn(data: bytes) -> list[bytes]:
    body = _outer(data, 2, 2, "alpn")
    out = []
    pos, end = 0, len(body)
    while pos < end:
        item_end = pos + 1 + body[pos]
        if item_end > end or item_end == pos + 1:
            raise decode_error("bad ALPN protocol name length")
        out.append(body[pos + 1 : item_end])
        pos = item_end
    return out


# supported_versions, RFC 8446 §4.2.1.
def encode_supported_versions_client(versions: Sequence[int] = (TLS13_VERSION,)) -> bytes:
    body = b"".join(v.to_bytes(2, "big") for v in versions)
    return bytes((len(body),)) + body


def decode_supported_versions_client(data: bytes) -> list[int]:
    return _u16s(_outer(data, 1, 2, "supported_versions"), "supported_versions")


def encode_u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def decode_u16(data: bytes, what: str) -> int:
    if len(data) != 2:
        raise decode_error(f"{what} is not 2 bytes")
    return int.from_bytes(data, "big")


# key_share, RFC 8446 §4.2.8.
def encode_key_share_client(shares: Sequence[tuple[int, bytes]]) -> bytes:
    body = b"".join([_U16_PAIR.pack(group, len(key)) + key for group, key in shares])
    return _U16.pack(len(body)) + body


def decode_key_share_client(data: bytes) -> list[tuple[int, bytes]]:
    body = _outer(data, 2, 0, "key_share")
    out: list[tuple[int, bytes]] = []
    seen = set()
    pos, end = 0, len(body)
    while pos < end:
        if pos + 4 > end:
            raise decode_error("truncated key share entry")
        group = (body[pos] << 8) | body[pos + 1]
        key_end = pos + 4 + ((body[pos + 2] << 8) | body[pos + 3])
        if key_end > end or key_end == pos + 4:
            raise decode_error("bad key share length")
        if group in seen:
            raise illegal_parameter("two key shares for one group")
        seen.add(group)
        out.append((group, body[pos + 4 : key_end]))
        pos = key_end
    return out


def encode_key_share_server(group: int, key: bytes) -> bytes:
    return _U16_PAIR.pack(group, len(key)) + key


def decode_key_share_server(data: bytes) -> tuple[int, bytes]:
    n = len(data)
    if n < 4:
        raise decode_error("truncated key_share")
    key_len = (data[2] << 8) | data[3]
    if key_len < 1:
        raise decode_error("empty key_exchange in key_share")
    if 4 + key_len > n:
        raise decode_error("truncated key_share")
    if 4 + key_len != n:
        raise decode_error(f"{n - 4 - key_len} trailing bytes in key_share")
    return (data[0] << 8) | data[1], data[4:]


# psk_key_exchange_modes, RFC 8446 §4.2.9.
def encode_psk_modes(modes: Sequence[int]) -> bytes:
    return bytes((len(modes),)) + bytes(modes)


def decode_psk_modes(data: bytes) -> list[int]:
    return list(_outer(data, 1, 1, "psk_key_exchange_modes"))


# pre_shared_key, RFC 8446 §4.2.11.
@dataclass(frozen=True)
class PskIdentity:
    identity: bytes
    obfuscated_ticket_age: int


def encode_offered_psks(identities: Sequence[PskIdentity], binders: Sequence[bytes]) -> bytes:
    w = Writer()
    ids = Writer()
    for ident in identities:
        ids.vec(2, ident.identity)
        ids.u32(ident.obfuscated_ticket_age)
    w.vec(2, ids.getvalue())
    bs = b"".join(len(b).to_bytes(1, "big") + b for b in binders)
    w.vec(2, bs)
    return w.getvalue()


def decode_offered_psks(data: bytes) -> tuple[list[PskIdentity], list[bytes]]:
    r = Reader(data)
    ids = r.sub(2, min_len=7)
    identities = []
    while not ids.eof():
        identities.append(PskIdentity(ids.vec(2, min_len=1), ids.u32()))
    bl = r.sub(2, min_len=33)
    binders = []
    while not bl.eof():
        binders.append(bl.vec(1, min_len=32))
    _finish(r, "pre_shared_key")
    if len(binders) != len(identities):
        raise illegal_parameter("PSK identity and binder counts differ")
    return identities, binders


# cookie, RFC 8446 §4.2.2.
def encode_cookie(cookie: bytes) -> bytes:
    return len(cookie).to_bytes(2, "big") + cookie


def decode_cookie(data: bytes) -> bytes:
    r = Reader(data)
    cookie = r.vec(2, min_len=1)
    _finish(r, "cookie")
    return cookie


# early_data in NewSessionTicket, RFC 8446 §4.2.10.
def decode_max_early_data(data: bytes) -> int:
    if len(data) != 4:
        raise decode_error("early_data in NewSessionTicket is not 4 bytes")
    return int.from_bytes(data, "big")


def expect_empty(data: bytes, what: str) -> None:
    if data:
        raise decode_error(f"{what} must be empty")


# RFC 8446 §4.2: the messages each extension may appear in. A recognised extension in any
# other message aborts with illegal_parameter; an unrecognised one is ignored, except in a
# reply, where anything the peer did not ask for is unsupported_extension (checked by the
# caller, which knows what it asked for).
KNOWN_EXTENSIONS = frozenset(int(e) for e in ExtensionType)


CLIENT_HELLO_EXTENSIONS = KNOWN_EXTENSIONS - {ExtensionType.OID_FILTERS}
CERTIFICATE_REQUEST_EXTENSIONS = frozenset(
    {
        ExtensionType.SIGNATURE_ALGORITHMS,
        ExtensionType.SIGNATURE_ALGORITHMS_CERT,
        ExtensionType.CERTIFICATE_AUTHORITIES,
        ExtensionType.OID_FILTERS,
        ExtensionType.STATUS_REQUEST,
        ExtensionType.SIGNED_CERTIFICATE_TIMESTAMP,
    }
)
NEW_SESSION_TICKET_EXTENSIONS = frozenset({ExtensionType.EARLY_DATA})


_FORBIDDEN: dict[frozenset[int], frozenset[int]] = {}


def check_placement(exts: dict[int, bytes], allowed: frozenset[int], where: str) -> None:
    forbidden = _FORBIDDEN.get(allowed)
    if forbidden is None:
        forbidden = _FORBIDDEN[allowed] = KNOWN_EXTENSIONS - allowed
    if forbidden.isdisjoint(exts):
        return  # the usual case, one set operation; otherwise name the first offender
    for ext_type in exts:
        if ext_type in KNOWN_EXTENSIONS and ext_type not in allowed:
            raise illegal_parameter(f"extension {ext_type} is not allowed in {where} (RFC 8446 §4.2)")


def check_entry_extensions(exts: dict[int, bytes], where: str) -> None:
    """RFC 8446 §4.4.2: CertificateEntry extensions must answer ones we sent; we request
    none (no OCSP stapling or SCTs), so any is unsolicited."""
    if exts:
        raise TlsError(AlertDescription.unsupported_extension, f"unsolicited extension in a {where} entry")
