"""csrc/quic_abi.h against spec/kernel-quic-abi.md §1.2 (constants) and §1.3 (layouts)."""
from __future__ import annotations

import pytest

from quichsd import abi
from quichsd.abi import ffi, lib

# §1.3: name -> (sizeof, {field: (offset, size)}); x86_64.
LAYOUTS: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {
    "struct quic_handshake_info": (1, {"crypto_level": (0, 1)}),
    "struct quic_stream_info": (16, {"stream_id": (0, 8), "stream_flags": (8, 4)}),
    "struct quic_transport_param": (
        56,
        {
            "remote": (0, 1),
            "disable_active_migration": (1, 1),
            "grease_quic_bit": (2, 1),
            "stateless_reset": (3, 1),
            "disable_1rtt_encryption": (4, 1),
            "disable_compatible_version": (5, 1),
            "active_connection_id_limit": (6, 1),
            "ack_delay_exponent": (7, 1),
            "max_datagram_frame_size": (8, 2),
            "max_udp_payload_size": (10, 2),
            "max_idle_timeout": (12, 4),
            "max_ack_delay": (16, 4),
            "max_streams_bidi": (20, 2),
            "max_streams_uni": (22, 2),
            "max_data": (24, 8),
            "max_stream_data_bidi_local": (32, 8),
            "max_stream_data_bidi_remote": (40, 8),
            "max_stream_data_uni": (48, 8),
        },
    ),
    "struct quic_config": (
        28,
        {
            "version": (0, 4),
            "plpmtud_probe_interval": (4, 4),
            "initial_smoothed_rtt": (8, 4),
            "payload_cipher_type": (12, 4),
            "congestion_control_algo": (16, 1),
            "validate_peer_address": (17, 1),
            "stream_data_nodelay": (18, 1),
            "receive_session_ticket": (19, 1),
            "certificate_request": (20, 1),
            "reserved": (21, 3),
            "keepalive_probe_interval": (24, 4),
        },
    ),
    "struct quic_crypto_secret": (
        56,
        {"send": (0, 1), "level": (1, 1), "reserved": (2, 2), "type": (4, 4), "secret": (8, 48)},
    ),
    "struct quic_errinfo": (16, {"stream_id": (0, 8), "errcode": (8, 4)}),
    "struct quic_connection_id_info": (
        12,
        {"dest": (0, 1), "reserved": (1, 3), "active": (4, 4), "prior_to": (8, 4)},
    ),
    "struct quic_event_option": (2, {"type": (0, 1), "on": (1, 1)}),
    "struct quic_stream_update": (
        24,
        {"id": (0, 8), "state": (8, 1), "reserved": (9, 3), "errcode": (12, 4), "finalsz": (16, 8)},
    ),
    "struct quic_stream_max_data": (16, {"id": (0, 8), "max_data": (8, 8)}),
    "struct quic_connection_close": (
        72,
        {"errcode": (0, 4), "frame": (4, 1), "reserved": (5, 3), "phrase": (8, 64)},
    ),
    "union quic_event": (
        72,
        {
            "update": (0, 24),
            "max_data": (0, 16),
            "close": (0, 72),
            "info": (0, 12),
            "max_stream": (0, 8),
            "local_migration": (0, 1),
            "key_update_phase": (0, 1),
        },
    ),
}


@pytest.mark.parametrize("ctype", sorted(LAYOUTS))
def test_sizeof(ctype: str) -> None:
    assert ffi.sizeof(ctype) == LAYOUTS[ctype][0]


@pytest.mark.parametrize("ctype", sorted(LAYOUTS))
def test_field_offsets_and_sizes(ctype: str) -> None:
    expected = LAYOUTS[ctype][1]
    declared = dict(ffi.typeof(ctype).fields)
    assert list(declared) == list(expected), "field names and order"
    for name, (offset, size) in expected.items():
        assert ffi.offsetof(ctype, name) == offset, name
        assert ffi.sizeof(declared[name].type) == size, name


def test_alignment() -> None:
    assert ffi.alignof("struct quic_stream_info") == 8
    assert ffi.alignof("struct quic_transport_param") == 8
    assert ffi.alignof("struct quic_config") == 4
    assert ffi.alignof("struct quic_crypto_secret") == 4
    assert ffi.alignof("union quic_event") == 8


# §1.2
CONSTANTS: dict[str, int] = {
    "IPPROTO_QUIC": 261,
    "SOL_QUIC": 288,
    "QUIC_STREAM_INFO": 0,
    "QUIC_HANDSHAKE_INFO": 1,
    "QUIC_STREAM_TYPE_SERVER_MASK": 0x01,
    "QUIC_STREAM_TYPE_UNI_MASK": 0x02,
    "QUIC_STREAM_TYPE_MASK": 0x03,
    "QUIC_VERSION_V1": 0x00000001,
    "QUIC_VERSION_V2": 0x6B3343CF,
    "QUIC_CRYPTO_SECRET_BUFFER_SIZE": 48,
    "QUIC_CLOSE_PHRASE_BUFFER_SIZE": 64,
    "MSG_QUIC_STREAM_NEW": 0x400,
    "MSG_QUIC_STREAM_FIN": 0x200,
    "MSG_QUIC_STREAM_UNI": 0x800,
    "MSG_QUIC_STREAM_DONTWAIT": 0x10000,
    "MSG_QUIC_STREAM_SNDBLOCK": 0x2000,
    "MSG_QUIC_DATAGRAM": 0x1000,
    "MSG_QUIC_NOTIFICATION": 0x8000,
    "QUIC_CRYPTO_APP": 0,
    "QUIC_CRYPTO_INITIAL": 1,
    "QUIC_CRYPTO_HANDSHAKE": 2,
    "QUIC_CRYPTO_EARLY": 3,
    "QUIC_CRYPTO_MAX": 4,
    "QUIC_SOCKOPT_EVENT": 0,
    "QUIC_SOCKOPT_STREAM_OPEN": 1,
    "QUIC_SOCKOPT_STREAM_RESET": 2,
    "QUIC_SOCKOPT_STREAM_STOP_SENDING": 3,
    "QUIC_SOCKOPT_CONNECTION_ID": 4,
    "QUIC_SOCKOPT_CONNECTION_CLOSE": 5,
    "QUIC_SOCKOPT_CONNECTION_MIGRATION": 6,
    "QUIC_SOCKOPT_KEY_UPDATE": 7,
    "QUIC_SOCKOPT_TRANSPORT_PARAM": 8,
    "QUIC_SOCKOPT_CONFIG": 9,
    "QUIC_SOCKOPT_TOKEN": 10,
    "QUIC_SOCKOPT_ALPN": 11,
    "QUIC_SOCKOPT_SESSION_TICKET": 12,
    "QUIC_SOCKOPT_CRYPTO_SECRET": 13,
    "QUIC_SOCKOPT_TRANSPORT_PARAM_EXT": 14,
    "QUIC_EVENT_NONE": 0,
    "QUIC_EVENT_STREAM_UPDATE": 1,
    "QUIC_EVENT_STREAM_MAX_DATA": 2,
    "QUIC_EVENT_STREAM_MAX_STREAM": 3,
    "QUIC_EVENT_CONNECTION_ID": 4,
    "QUIC_EVENT_CONNECTION_CLOSE": 5,
    "QUIC_EVENT_CONNECTION_MIGRATION": 6,
    "QUIC_EVENT_KEY_UPDATE": 7,
    "QUIC_EVENT_NEW_TOKEN": 8,
    "QUIC_EVENT_NEW_SESSION_TICKET": 9,
    "QUIC_EVENT_MAX": 10,
    "QUIC_STREAM_SEND_STATE_READY": 0,
    "QUIC_STREAM_SEND_STATE_SEND": 1,
    "QUIC_STREAM_SEND_STATE_SENT": 2,
    "QUIC_STREAM_SEND_STATE_RECVD": 3,
    "QUIC_STREAM_SEND_STATE_RESET_SENT": 4,
    "QUIC_STREAM_SEND_STATE_RESET_RECVD": 5,
    "QUIC_STREAM_RECV_STATE_RECV": 6,
    "QUIC_STREAM_RECV_STATE_SIZE_KNOWN": 7,
    "QUIC_STREAM_RECV_STATE_RECVD": 8,
    "QUIC_STREAM_RECV_STATE_READ": 9,
    "QUIC_STREAM_RECV_STATE_RESET_RECVD": 10,
    "QUIC_STREAM_RECV_STATE_RESET_READ": 11,
    "QUIC_CONG_ALG_RENO": 0,
    "QUIC_CONG_ALG_CUBIC": 1,
    "QUIC_CONG_ALG_MAX": 2,
    "TLS_CIPHER_AES_GCM_128": 51,
    "TLS_CIPHER_AES_GCM_256": 52,
    "TLS_CIPHER_AES_CCM_128": 53,
    "TLS_CIPHER_CHACHA20_POLY1305": 54,
    "QUIC_TRANSPORT_ERROR_NONE": 0x00,
    "QUIC_TRANSPORT_ERROR_INTERNAL": 0x01,
    "QUIC_TRANSPORT_ERROR_CONNECTION_REFUSED": 0x02,
    "QUIC_TRANSPORT_ERROR_FLOW_CONTROL": 0x03,
    "QUIC_TRANSPORT_ERROR_STREAM_LIMIT": 0x04,
    "QUIC_TRANSPORT_ERROR_STREAM_STATE": 0x05,
    "QUIC_TRANSPORT_ERROR_FINAL_SIZE": 0x06,
    "QUIC_TRANSPORT_ERROR_FRAME_ENCODING": 0x07,
    "QUIC_TRANSPORT_ERROR_TRANSPORT_PARAM": 0x08,
    "QUIC_TRANSPORT_ERROR_CONNECTION_ID_LIMIT": 0x09,
    "QUIC_TRANSPORT_ERROR_PROTOCOL_VIOLATION": 0x0A,
    "QUIC_TRANSPORT_ERROR_INVALID_TOKEN": 0x0B,
    "QUIC_TRANSPORT_ERROR_APPLICATION": 0x0C,
    "QUIC_TRANSPORT_ERROR_CRYPTO_BUF_EXCEEDED": 0x0D,
    "QUIC_TRANSPORT_ERROR_KEY_UPDATE": 0x0E,
    "QUIC_TRANSPORT_ERROR_AEAD_LIMIT_REACHED": 0x0F,
    "QUIC_TRANSPORT_ERROR_NO_VIABLE_PATH": 0x10,
    "QUIC_TRANSPORT_ERROR_VERSION_NEGOTIATION": 0x11,
    "QUIC_TRANSPORT_ERROR_CRYPTO": 0x100,
    # generic MSG_* bits the QUIC API uses (§1.2 "other flags that matter")
    "MSG_PEEK": 0x2,
    "MSG_CTRUNC": 0x8,
    "MSG_DONTWAIT": 0x40,
    "MSG_EOR": 0x80,
    "MSG_WAITALL": 0x100,
    "MSG_NOSIGNAL": 0x4000,
    "MSG_MORE": 0x8000,
    "MSG_BATCH": 0x40000,
    # csrc/quic_sock.h: quic_recvmsg_any's item kinds and its control buffer
    "QUICHSD_RECV_HANDSHAKE": 1,
    "QUICHSD_RECV_STREAM": 2,
    "QUICHSD_RECV_EVENT": 3,
    "QUICHSD_RECV_DATAGRAM": 4,
    "QUICHSD_RECV_CONTROL_SIZE": 32 + 24 + 80,  # CMSG_SPACE(16) + CMSG_SPACE(1) + CMSG_SPACE(64)
}


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_constant(name: str) -> None:
    assert getattr(lib, name) == CONSTANTS[name]


def test_no_unpinned_constants() -> None:
    exported = {n for n in dir(lib) if n.isupper()}
    assert exported == set(CONSTANTS)


def test_secret_array_matches_buffer_constant() -> None:
    field = dict(ffi.typeof("struct quic_crypto_secret").fields)["secret"]
    assert field.type.length == lib.QUIC_CRYPTO_SECRET_BUFFER_SIZE
    field = dict(ffi.typeof("struct quic_connection_close").fields)["phrase"]
    assert field.type.length == lib.QUIC_CLOSE_PHRASE_BUFFER_SIZE


# ---- pack helpers -------------------------------------------------------------------------


def test_handshake_info_bytes() -> None:
    assert abi.pack_handshake_info(lib.QUIC_CRYPTO_HANDSHAKE) == b"\x02"
    assert abi.unpack_handshake_info(b"\x01") == lib.QUIC_CRYPTO_INITIAL


def test_stream_info_round_trip() -> None:
    data = abi.pack_stream_info(-1, lib.MSG_QUIC_STREAM_NEW | lib.MSG_QUIC_STREAM_FIN)
    assert data == b"\xff" * 8 + (0x600).to_bytes(4, "little") + b"\0" * 4
    assert abi.unpack_stream_info(data) == (-1, 0x600)


@pytest.mark.parametrize(
    ("cipher_type", "secret_len"),
    [(51, 32), (52, 48), (53, 32), (54, 32)],
)
def test_crypto_secret_round_trip(cipher_type: int, secret_len: int) -> None:
    secret = bytes(range(1, secret_len + 1))
    data = abi.pack_crypto_secret(lib.QUIC_CRYPTO_HANDSHAKE, True, cipher_type, secret)
    assert len(data) == 56
    # send, level, reserved(2), type (u32 LE), secret zero padded to 48
    assert data[:8] == bytes([1, 2, 0, 0]) + cipher_type.to_bytes(4, "little")
    assert data[8:] == secret.ljust(48, b"\0")
    assert abi.unpack_crypto_secret(data) == abi.CryptoSecret(2, True, cipher_type, secret)


def test_crypto_secret_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        abi.pack_crypto_secret(lib.QUIC_CRYPTO_APP, False, lib.TLS_CIPHER_AES_GCM_256, b"x" * 32)


def test_transport_param_round_trip() -> None:
    values = {
        "remote": 1,
        "disable_active_migration": 1,
        "grease_quic_bit": 1,
        "stateless_reset": 1,
        "disable_1rtt_encryption": 0,
        "disable_compatible_version": 1,
        "active_connection_id_limit": 7,
        "ack_delay_exponent": 3,
        "max_datagram_frame_size": 1200,
        "max_udp_payload_size": 65527,
        "max_idle_timeout": 30_000_000,
        "max_ack_delay": 25_000,
        "max_streams_bidi": 100,
        "max_streams_uni": 100,
        "max_data": 65535 * 32,
        "max_stream_data_bidi_local": 65535 * 16,
        "max_stream_data_bidi_remote": 65535 * 16,
        "max_stream_data_uni": 65535 * 16,
    }
    data = abi.pack_transport_param(**values)
    assert len(data) == 56
    assert data[10:12] == (65527).to_bytes(2, "little")
    assert data[24:32] == (65535 * 32).to_bytes(8, "little")
    assert abi.unpack_transport_param(data) == values


def test_transport_param_kernel_copy_rule() -> None:
    # Only remote=1 given (what a getsockopt caller passes in): zero-extended.
    fields = abi.unpack_transport_param(b"\x01")
    assert fields["remote"] == 1 and all(v == 0 for k, v in fields.items() if k != "remote")
    # Longer than the struct: the tail is ignored.
    data = abi.pack_transport_param(max_data=5) + b"\xff" * 8
    assert abi.unpack_transport_param(data)["max_data"] == 5


def test_pack_rejects_unknown_field_and_overflow() -> None:
    with pytest.raises(TypeError):
        abi.pack_transport_param(max_bananas=1)
    with pytest.raises(OverflowError):
        abi.pack_transport_param(ack_delay_exponent=256)


def test_config_round_trip() -> None:
    data = abi.pack_config(
        version=lib.QUIC_VERSION_V2,
        initial_smoothed_rtt=333_000,
        payload_cipher_type=lib.TLS_CIPHER_CHACHA20_POLY1305,
        congestion_control_algo=lib.QUIC_CONG_ALG_CUBIC,
        receive_session_ticket=5,
        certificate_request=2,
        keepalive_probe_interval=1_500_000,
    )
    assert len(data) == 28
    assert data[0:4] == bytes.fromhex("cf43336b")
    assert data[24:28] == (1_500_000).to_bytes(4, "little")
    fields = abi.unpack_config(data)
    assert fields["version"] == 0x6B3343CF
    assert fields["payload_cipher_type"] == 54
    assert fields["certificate_request"] == 2
    assert fields["reserved"] == b"\0\0\0"
    assert abi.pack_config(**fields) == data


def test_event_option_bytes() -> None:
    assert abi.pack_event_option(lib.QUIC_EVENT_CONNECTION_CLOSE, True) == b"\x05\x01"


def test_connection_close_round_trip() -> None:
    data = abi.pack_connection_close(0x128, b"handshake failure", frame=6)
    assert len(data) == 72
    assert abi.unpack_connection_close(data) == abi.ConnectionClose(0x128, 6, b"handshake failure")
    with pytest.raises(ValueError):
        abi.pack_connection_close(0, b"x" * 64)


def test_generic_pack_of_event_payloads() -> None:
    update = abi.pack_struct(
        "quic_stream_update",
        {"id": 4, "state": lib.QUIC_STREAM_RECV_STATE_RECVD, "errcode": 0, "finalsz": 1000},
    )
    assert len(update) == 24
    assert abi.unpack_struct("quic_stream_update", update)["finalsz"] == 1000
    info = abi.pack_struct("quic_connection_id_info", {"dest": 1, "active": 3, "prior_to": 2})
    assert info == bytes([1, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0])
