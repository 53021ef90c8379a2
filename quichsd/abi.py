"""The IPPROTO_QUIC socket ABI seen from Python (spec/kernel-quic-abi.md §1.2, §1.3).

`ffi`/`lib` are cffi's compiled view of csrc/quic_abi.h, so sizes, offsets and constant
values are the C compiler's, never restated here. The helpers turn Python values into the
exact bytes a setsockopt/cmsg carries and back.

Unpacking follows the kernel's "copy the common portion" rule: a short buffer is
zero-extended, a long one is cut to sizeof(struct). A simulated socket that unpacks its
optval with these helpers therefore tolerates the same inputs the kernel does.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from functools import cache, lru_cache
from typing import NamedTuple

from ._quic_abi import ffi, lib

__all__ = [
    "ffi",
    "lib",
    "CIPHER_SECRET_LEN",
    "CryptoSecret",
    "ConnectionClose",
    "pack_struct",
    "unpack_struct",
    "pack_handshake_info",
    "unpack_handshake_info",
    "pack_stream_info",
    "unpack_stream_info",
    "pack_crypto_secret",
    "unpack_crypto_secret",
    "pack_transport_param",
    "unpack_transport_param",
    "pack_config",
    "unpack_config",
    "pack_event_option",
    "pack_connection_close",
    "unpack_connection_close",
]

FieldValue = int | bytes
_ORDER = sys.byteorder  # the structs are in host byte order, as the compiler lays them out

# Traffic-secret length per kernel cipher type: the hash of the TLS suite (§1.2).
CIPHER_SECRET_LEN: Mapping[int, int] = {
    lib.TLS_CIPHER_AES_GCM_128: 32,
    lib.TLS_CIPHER_AES_GCM_256: 48,
    lib.TLS_CIPHER_AES_CCM_128: 32,
    lib.TLS_CIPHER_CHACHA20_POLY1305: 32,
}


def _ctype(name: str) -> str:
    return name if name.startswith(("struct ", "union ")) else f"struct {name}"


class _Field(NamedTuple):
    offset: int
    size: int
    array: bool  # uint8_t[N]: bytes; otherwise an integer
    signed: bool


@cache
def _layout(name: str) -> tuple[str, int, dict[str, _Field]]:
    """The struct's C name, size and fields, read once from the compiled ABI (csrc/)."""
    ctype = _ctype(name)
    fields: dict[str, _Field] = {}
    for key, field in ffi.typeof(ctype).fields:
        kind = field.type.kind
        if kind not in ("array", "primitive"):
            continue
        fields[key] = _Field(field.offset, ffi.sizeof(field.type), kind == "array",
                             not field.type.cname.startswith(("uint", "unsigned")))
    return ctype, ffi.sizeof(ctype), fields


def pack_struct(name: str, fields: Mapping[str, FieldValue]) -> bytes:
    """Bytes of `struct name` with `fields` set and everything else zero.

    Scalars take ints, arrays take bytes (zero padded). Unknown names raise TypeError,
    values that do not fit raise OverflowError/ValueError.
    """
    ctype, size, layout = _layout(name)
    out = bytearray(size)
    for key, value in fields.items():
        field = layout.get(key)
        if field is None:
            raise TypeError(f"{ctype} has no field {key!r}")
        if field.array:
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise TypeError(f"{ctype}.{key} takes bytes")
            if len(value) > field.size:
                raise ValueError(f"{ctype}.{key} holds at most {field.size} bytes")
            out[field.offset:field.offset + len(value)] = value
        else:
            if not isinstance(value, int):
                raise TypeError(f"{ctype}.{key} takes an int")
            end = field.offset + field.size
            out[field.offset:end] = value.to_bytes(field.size, _ORDER, signed=field.signed)
    return bytes(out)


def unpack_struct(name: str, data: bytes) -> dict[str, FieldValue]:
    """Every scalar and array field of `struct name` read from `data` (kernel copy rule:
    a short buffer reads as zero-extended, a long one is cut to the struct's size)."""
    _, size, layout = _layout(name)
    raw = bytes(data[:size])
    if len(raw) < size:
        raw += bytes(size - len(raw))
    out: dict[str, FieldValue] = {}
    for key, f in layout.items():
        chunk = raw[f.offset:f.offset + f.size]
        out[key] = chunk if f.array else int.from_bytes(chunk, _ORDER, signed=f.signed)
    return out


# ---- cmsg payloads ---------------------------------------------------------------------


def pack_handshake_info(level: int) -> bytes:
    """QUIC_HANDSHAKE_INFO cmsg data for `level` (enum quic_crypto_level)."""
    return pack_struct("quic_handshake_info", {"crypto_level": level})


def unpack_handshake_info(data: bytes) -> int:
    return int(unpack_struct("quic_handshake_info", data)["crypto_level"])


def pack_stream_info(stream_id: int, stream_flags: int = 0) -> bytes:
    return pack_struct("quic_stream_info", {"stream_id": stream_id, "stream_flags": stream_flags})


def unpack_stream_info(data: bytes) -> tuple[int, int]:
    fields = unpack_struct("quic_stream_info", data)
    return int(fields["stream_id"]), int(fields["stream_flags"])


# ---- socket options ---------------------------------------------------------------------


class CryptoSecret(NamedTuple):
    level: int
    send: bool
    cipher_type: int
    secret: bytes


@lru_cache(maxsize=64)
def _crypto_secret_head(level: int, send: bool, cipher_type: int) -> tuple[bytes, int]:
    """The struct's bytes before `secret` for these scalars, and the secret array's size.
    There are few (level, direction, cipher) combinations, so each is packed once."""
    _, size, layout = _layout("quic_crypto_secret")
    secret = layout["secret"]
    if secret.offset + secret.size != size:  # the padding below assumes it comes last
        raise TypeError("quic_crypto_secret.secret is not the struct's last member")
    packed = pack_struct("quic_crypto_secret", {"send": int(send), "level": level, "type": cipher_type})
    return packed[:secret.offset], secret.size


def pack_crypto_secret(level: int, send: bool, cipher_type: int, secret: bytes) -> bytes:
    """QUIC_SOCKOPT_CRYPTO_SECRET value; `secret` is zero padded to 48 bytes."""
    expected = CIPHER_SECRET_LEN.get(cipher_type)
    if expected is not None and len(secret) != expected:
        raise ValueError(f"cipher type {cipher_type} needs a {expected}-byte secret")
    head, room = _crypto_secret_head(int(level), bool(send), cipher_type)
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise TypeError("struct quic_crypto_secret.secret takes bytes")
    n = len(secret)
    if n > room:
        raise ValueError(f"struct quic_crypto_secret.secret holds at most {room} bytes")
    return head + bytes(secret) + bytes(room - n)


def unpack_crypto_secret(data: bytes) -> CryptoSecret:
    """The secret is cut to its cipher's length when the type is known (the kernel
    reads only that many bytes); otherwise the whole buffer is returned."""
    fields = unpack_struct("quic_crypto_secret", data)
    cipher_type = int(fields["type"])
    secret = bytes(fields["secret"])
    length = CIPHER_SECRET_LEN.get(cipher_type)
    if length is not None:
        secret = secret[:length]
    return CryptoSecret(int(fields["level"]), bool(fields["send"]), cipher_type, secret)


def pack_transport_param(**fields: int) -> bytes:
    """QUIC_SOCKOPT_TRANSPORT_PARAM value (times in microseconds; zero = unchanged)."""
    return pack_struct("quic_transport_param", fields)


def unpack_transport_param(data: bytes) -> dict[str, int]:
    return {k: int(v) for k, v in unpack_struct("quic_transport_param", data).items()}


def pack_config(**fields: int | bytes) -> bytes:
    """QUIC_SOCKOPT_CONFIG value (zero = unchanged)."""
    return pack_struct("quic_config", fields)


def unpack_config(data: bytes) -> dict[str, FieldValue]:
    return unpack_struct("quic_config", data)


def pack_event_option(event_type: int, on: bool) -> bytes:
    return pack_struct("quic_event_option", {"type": event_type, "on": int(bool(on))})


class ConnectionClose(NamedTuple):
    errcode: int
    frame: int
    phrase: bytes


def pack_connection_close(errcode: int, phrase: bytes = b"", frame: int = 0) -> bytes:
    """QUIC_SOCKOPT_CONNECTION_CLOSE value; the phrase keeps room for its NUL."""
    limit = lib.QUIC_CLOSE_PHRASE_BUFFER_SIZE - 1
    if len(phrase) > limit or b"\0" in phrase:
        raise ValueError(f"close phrase: at most {limit} bytes, no NUL")
    return pack_struct(
        "quic_connection_close", {"errcode": errcode, "frame": frame, "phrase": phrase}
    )


def unpack_connection_close(data: bytes) -> ConnectionClose:
    fields = unpack_struct("quic_connection_close", data)
    phrase = bytes(fields["phrase"]).split(b"\0", 1)[0]
    return ConnectionClose(int(fields["errcode"]), int(fields["frame"]), phrase)
