"""The handshake message codec against RFC 8448's traces, byte for byte."""
from __future__ import annotations

import pytest

from quichsd.tls import extensions as ext
from quichsd.tls.constants import ExtensionType as ET
from quichsd.tls.errors import TlsError
from quichsd.tls.keyschedule import finished_verify_data, verify_finished
from quichsd.tls.messages import (
    Certificate,
    ClientHello,
    EncryptedExtensions,
    Finished,
    MessageBuffer,
    NewSessionTicket,
    ServerHello,
    decode_message,
)
from tests.vectors import rfc8448

TRACES = ["simple_1rtt", "resumed_0rtt", "hrr", "client_auth"]


def trace_messages():
    for trace in TRACES:
        for name, hexdata in rfc8448(trace)["messages"].items():
            if name != "ClientHello_prefix_without_binders":
                yield pytest.param(trace, name, bytes.fromhex(hexdata), id=f"{trace}-{name}")


@pytest.mark.parametrize(("trace", "name", "data"), list(trace_messages()))
def test_rfc8448_message_round_trips(trace: str, name: str, data: bytes) -> None:
    message = decode_message(data)
    assert message.encode() == data
    # Decoding the re-encoded form gives an equal object: nothing is lost on the way.
    assert decode_message(message.encode()) == message


def test_rfc8448_client_hello_fields() -> None:
    ch = decode_message(bytes.fromhex(rfc8448("simple_1rtt")["messages"]["ClientHello"]))
    assert isinstance(ch, ClientHello)
    assert ch.legacy_session_id == b""
    assert ext.decode_server_name(ch.extensions[ET.SERVER_NAME]) == "server"
    assert ext.decode_supported_versions_client(ch.extensions[ET.SUPPORTED_VERSIONS]) == [0x0304]
    shares = ext.decode_key_share_client(ch.extensions[ET.KEY_SHARE])
    assert shares == [(0x001D, bytes.fromhex(rfc8448("simple_1rtt")["keys"]["client_x25519_public"]))]
    assert 0x1301 in ch.cipher_suites


def test_rfc8448_server_messages_fields() -> None:
    msgs = rfc8448("simple_1rtt")["messages"]
    sh = decode_message(bytes.fromhex(msgs["ServerHello"]))
    assert isinstance(sh, ServerHello) and not sh.is_hello_retry_request
    assert ext.decode_key_share_server(sh.extensions[ET.KEY_SHARE])[0] == 0x001D
    cert = decode_message(bytes.fromhex(msgs["server_Certificate"]))
    assert isinstance(cert, Certificate) and len(cert.entries) == 1
    expected = rfc8448("simple_1rtt")["computed_by_us"]["server_certificate_der"]
    assert cert.entries[0].cert_data.hex() == expected
    nst = decode_message(bytes.fromhex(msgs["NewSessionTicket"]))
    assert isinstance(nst, NewSessionTicket)
    fields = rfc8448("simple_1rtt")["computed_by_us"]["new_session_ticket_fields"]
    assert nst.lifetime == fields["ticket_lifetime"]
    assert nst.nonce.hex() == fields["ticket_nonce"]


def test_rfc8448_hello_retry_request_is_recognised() -> None:
    hrr = decode_message(bytes.fromhex(rfc8448("hrr")["messages"]["HelloRetryRequest"]))
    assert isinstance(hrr, ServerHello) and hrr.is_hello_retry_request
    assert ext.decode_u16(hrr.extensions[ET.KEY_SHARE], "key_share") == 0x0017
    assert ext.decode_cookie(hrr.extensions[ET.COOKIE])


def test_rfc8448_binder_prefix() -> None:
    msgs = rfc8448("resumed_0rtt")["messages"]
    ch = decode_message(bytes.fromhex(msgs["ClientHello"]))
    assert ch.binder_prefix() == bytes.fromhex(msgs["ClientHello_prefix_without_binders"])
    identities, binders = ext.decode_offered_psks(ch.extensions[ET.PRE_SHARED_KEY])
    assert len(identities) == len(binders) == 1


@pytest.mark.parametrize("trace", TRACES)
def test_rfc8448_finished_verifies_and_one_flipped_byte_fails(trace: str) -> None:
    """The check the engine runs on a peer's Finished, on the published values."""
    s = rfc8448(trace)
    msgs = s["messages"]
    order = [k for k in msgs if k != "ClientHello_prefix_without_binders"]
    for writer, secret_name in (("server", "server_handshake_traffic_secret"),
                                ("client", "client_handshake_traffic_secret")):
        idx = order.index(f"{writer}_Finished")
        transcript = b"".join(bytes.fromhex(msgs[k]) for k in order[:idx])
        if trace == "hrr":
            from quichsd.tls.keyschedule import message_hash

            ch1 = bytes.fromhex(msgs["ClientHello"])
            transcript = message_hash("sha256", ch1) + transcript[len(ch1):]
        import hashlib

        th = hashlib.sha256(transcript).digest()
        fin = decode_message(bytes.fromhex(msgs[f"{writer}_Finished"]))
        assert isinstance(fin, Finished)
        expected = finished_verify_data("sha256", bytes.fromhex(s["secrets"][secret_name]), th)
        assert verify_finished(expected, fin.verify_data)
        flipped = bytes([fin.verify_data[0] ^ 1]) + fin.verify_data[1:]
        assert not verify_finished(expected, flipped)


def test_message_buffer_reassembles_any_chunking() -> None:
    msgs = rfc8448("simple_1rtt")["messages"]
    stream = b"".join(bytes.fromhex(msgs[k]) for k in ("EncryptedExtensions", "server_Certificate",
                                                       "server_CertificateVerify", "server_Finished"))
    for size in (1, 3, 17, 100, len(stream)):
        buf = MessageBuffer()
        out = []
        for i in range(0, len(stream), size):
            out += buf.feed(stream[i : i + size])
        assert b"".join(out) == stream and len(out) == 4 and len(buf) == 0


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("0800000200"),  # EncryptedExtensions: truncated extension block
        bytes.fromhex("080000030000"),  # length says 3, 2 present
        bytes.fromhex("0800000400000000"),  # trailing bytes after the block
    ],
)
def test_malformed_messages_are_decode_errors(data: bytes) -> None:
    with pytest.raises(TlsError) as err:
        decode_message(data)
    assert err.value.alert.name == "decode_error"


def test_duplicate_extension_is_illegal_parameter() -> None:
    body = bytes.fromhex("000a" "0010000100" "0010000100")
    with pytest.raises(TlsError) as err:
        decode_message(bytes([8]) + len(body).to_bytes(3, "big") + body)
    assert err.value.alert.name == "illegal_parameter"


def test_encrypted_extensions_round_trip() -> None:
    ee = EncryptedExtensions({ET.ALPN: ext.encode_alpn([b"h3"]), ET.QUIC_TRANSPORT_PARAMETERS: b"\x01\x02"})
    assert decode_message(ee.encode()) == ee
