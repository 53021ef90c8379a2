"""Target tls_messages: the TLS handshake message and extension decoders (RFC 8446 §4),
quichsd/tls/messages.py, extensions.py and wire.py, on arbitrary bytes.

Input: the first byte picks the check, the rest is the bytes it is given:
    0      one message with its 4-byte header (decode_message), as the engine decodes it
    1      the bytes cut into chunks (sized by the first byte of the rest) and fed to a
           MessageBuffer, the per-level reassembly every received CRYPTO byte goes through
    2..12  one extension body through its decoder (server_name, ALPN, key_share, ...)
    13     session data (SessionData.decode): what a client resumes from, read from the
           consumer's SESSION_TICKET socket option or `quichsd client --session FILE`

A bug is: any exception but TlsError; a TlsError whose alert is internal_error; a message or
extension that decodes but does not encode back to the same bytes (every field is kept,
so the codec is exact); a MessageBuffer that returns something other than the whole
messages of what it was fed, in order; session data that decodes but does not encode
back to the same bytes.
"""
from __future__ import annotations

from collections.abc import Callable

from quichsd.tls import extensions as ext
from quichsd.tls.constants import AlertDescription
from quichsd.tls.errors import TlsError
from quichsd.tls.messages import MAX_MESSAGE_SIZE, MessageBuffer, decode_message
from quichsd.tls.session import SessionData


def _message(data: bytes) -> None:
    msg = decode_message(data)
    again = msg.encode()
    assert again == data, f"{type(msg).__name__} re-encodes differently:\n{data.hex()}\n{again.hex()}"
    # What the engine checks next on every message with an extension block.
    exts = getattr(msg, "extensions", None)
    if exts is not None:
        ext.check_placement(exts, ext.CLIENT_HELLO_EXTENSIONS, type(msg).__name__)


def _buffer(data: bytes) -> None:
    if not data:
        return
    size = data[0] or 1
    stream = data[1:]
    buffer = MessageBuffer()
    out: list[bytes] = []
    try:
        for i in range(0, len(stream), size):
            out += buffer.feed(stream[i:i + size])
    except TlsError as err:
        assert err.alert == AlertDescription.illegal_parameter, err
        return
    joined = b"".join(out)
    assert stream.startswith(joined), "MessageBuffer returned bytes that were not fed"
    assert len(joined) + len(buffer) == len(stream), "MessageBuffer lost or invented bytes"
    for message in out:
        length = int.from_bytes(message[1:4], "big")
        assert len(message) == 4 + length <= 4 + MAX_MESSAGE_SIZE, "not one whole message"
    if len(buffer) >= 4:
        next_length = int.from_bytes(stream[len(joined) + 1:len(joined) + 4], "big")
        assert next_length + 4 > len(buffer), "a whole message was left in the buffer"


def _server_name(data: bytes) -> None:
    host = ext.decode_server_name(data)
    if host is not None:
        assert ext.decode_server_name(ext.encode_server_name(host)) == host


def _exact(decode: Callable[[bytes], object], encode: Callable[[object], bytes]) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        value = decode(data)
        again = encode(value)
        assert again == data, f"{decode.__name__} round trip:\n{data.hex()}\n{again.hex()}"

    return check


def _session(data: bytes) -> None:
    session = SessionData.decode(data)
    again = session.encode()
    assert again == data, f"session data round trip:\n{data.hex()}\n{again.hex()}"


CHECKS: tuple[Callable[[bytes], None], ...] = (
    _message,
    _buffer,
    _server_name,
    _exact(lambda d: ext.decode_u16_list(d, "supported_groups"), ext.encode_u16_list),
    _exact(ext.decode_alpn, ext.encode_alpn),
    _exact(ext.decode_supported_versions_client, ext.encode_supported_versions_client),
    _exact(lambda d: ext.decode_u16(d, "selected_version"), ext.encode_u16),
    _exact(ext.decode_key_share_client, ext.encode_key_share_client),
    _exact(ext.decode_key_share_server, lambda v: ext.encode_key_share_server(*v)),
    _exact(ext.decode_psk_modes, ext.encode_psk_modes),
    _exact(ext.decode_offered_psks, lambda v: ext.encode_offered_psks(*v)),
    _exact(ext.decode_cookie, ext.encode_cookie),
    _exact(ext.decode_max_early_data, lambda v: v.to_bytes(4, "big")),
    _session,
)


def one_input(data: bytes) -> None:
    if not data:
        return
    check = CHECKS[data[0] % len(CHECKS)]
    try:
        check(data[1:])
    except TlsError as err:
        assert err.alert != AlertDescription.internal_error, err
