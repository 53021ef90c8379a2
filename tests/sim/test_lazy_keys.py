"""Keys derived lazily (PacketKey.derive), the local transport parameters encoded once per
configuration, the peer's parsed with fewer calls: the same bytes, errors and behaviour as
before, only cheaper on the path of a handshake's datagrams."""
from __future__ import annotations

import os
import socket
import time
from typing import Any

import pytest

from quichsd.quic.packet_protection import AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, PacketKey
from quichsd.quic.varint import decode_varint_exact, encode_varint, encode_varint_fixed
from quichsd.quic.versions import QUIC_V1, QUIC_V2
from quichsd.sock.sim import tparams
from quichsd.sock.sim.connection import SimConnection
from quichsd.sock.sim.endpoint import Endpoint
from quichsd.sock.sim.levels import APP, HANDSHAKE, INITIAL
from quichsd.sock.sim.state import ConnState
from tests.sim.driver import SimServer, Wire, handshake, sim_client

HEADER = bytes.fromhex("c300000001088394c8f03e5157080000449e00000002")


@pytest.mark.parametrize("cipher", [AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305], ids=lambda c: c.name)
@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2], ids=["v1", "v2"])
def test_lazy_key_protects_as_an_eager_one(cipher, version):
    secret = os.urandom(cipher.secret_len)
    lazy, eager = PacketKey(cipher, secret, version), PacketKey(cipher, secret, version)
    eager.derive()
    assert not lazy.derived and eager.derived
    payload = os.urandom(300)
    packet = lazy.protect(HEADER, payload, 2)
    assert lazy.derived
    assert packet == eager.protect(HEADER, payload, 2)
    assert (lazy.key, lazy.iv, lazy.hp) == (eager.key, eager.iv, eager.hp)
    opener = PacketKey(cipher, secret, version)  # not derived: unprotect derives it
    assert opener.unprotect(packet, len(HEADER) - 4)[1] == payload


def test_lazy_key_update_matches():
    secret = os.urandom(32)
    lazy, eager = PacketKey(AES_128_GCM, secret, QUIC_V1), PacketKey(AES_128_GCM, secret, QUIC_V1)
    eager.derive()
    lazy_next, eager_next = lazy.next_phase(), eager.next_phase()
    assert lazy_next.secret == eager_next.secret and lazy_next.hp == eager_next.hp  # RFC 9001 §6
    assert lazy_next.protect(HEADER, b"x" * 40, 7) == eager_next.protect(HEADER, b"x" * 40, 7)


def test_wrong_secret_length_fails_at_install_time():
    with pytest.raises(ValueError):
        PacketKey(AES_128_GCM, b"\0" * 48, QUIC_V1)


def test_installed_keys_wait_for_use_or_idle_time():
    """The server installs Handshake and 1-RTT keys before its flight: the one the flight
    needs is derived when it is sent, the others stay secrets until derive_keys."""
    client, server = sim_client(), SimServer()
    wire = Wire(client, server)
    client.start(wire.now)
    (first,) = client.send(wire.now)
    conn = client.conn
    assert not conn.keys.recv[INITIAL].derived  # nothing from the server yet
    server.recv(first, wire.now)
    server.pump(wire.now)
    sconn = server.conn
    assert not sconn.keys.recv[HANDSHAKE].derived and not sconn.keys.send[APP].derived
    flight = server.send(wire.now)
    assert flight and sconn.keys.send[HANDSHAKE].derived and sconn.keys.send[INITIAL].derived
    assert not sconn.keys.recv[HANDSHAKE].derived
    sconn.derive_keys()
    assert all(k.derived for keys in (sconn.keys.send, sconn.keys.recv) for k in keys.values())
    for data in flight:
        client.recv(data, wire.now)
    wire.run(lambda: conn.state == sconn.state == ConnState.ESTABLISHED)


class _RecordingConnection(SimConnection):
    """Records, per CRYPTO_SECRET install: (level, send, key derived after it, packets parked
    for the level before it)."""

    __slots__ = ("seen",)

    def __init__(self, **kwargs: Any) -> None:
        self.seen: list[tuple[int, bool, bool, int]] = []
        super().__init__(**kwargs)

    def install_secret(self, level: int, send: bool, cipher_type: int, secret: bytes) -> None:
        parked = len(self.keys.parked.get(level, ()))
        super().install_secret(level, send, cipher_type, secret)
        key = (self.keys.send if send else self.keys.recv).get(level)
        self.seen.append((level, send, key is not None and key.derived, parked))


def test_parked_packets_are_opened_at_install():
    """The client's Handshake packet arrives before its key: the install replays it, so that
    key is derived at install, not later."""
    client, server = sim_client(connection=_RecordingConnection), SimServer()
    conn = client.conn
    assert isinstance(conn, _RecordingConnection)
    handshake(client, server)
    assert conn.state == server.conn.state == ConnState.ESTABLISHED
    hs_recv = [entry for entry in conn.seen if entry[:2] == (HANDSHAKE, False)]
    assert hs_recv == [(HANDSHAKE, False, True, 1)]


def test_endpoint_derives_keys_before_it_blocks():
    client = sim_client()
    conn = client.conn
    endpoint = Endpoint(socket.AF_INET)
    try:
        with endpoint.lock:
            endpoint.add_connection(conn)  # nothing to send before start(): no key derived
            assert not conn.keys.send[INITIAL].derived
            assert not endpoint.wait_for(lambda: False, time.monotonic() + 0.005)
            assert conn.keys.send[INITIAL].derived and conn.keys.recv[INITIAL].derived
    finally:
        endpoint.remove_connection(conn)
        endpoint.shutdown()


# Produced by the encoder before it cached the configuration's part: (local parameters,
# is_client, peer_sent_version_info, version, blob) with CIDs 11.., 22.. and token 33..
GOLDEN_BLOBS = [
    ({}, True, False, 0x00000001,
     "0f0811111111111111110504800ffff00604800ffff00704800ffff00404801fffe00802406409024064110c00000001"
     "6b3343cf000000010104800075300e0107"),
    ({}, True, True, 0x6b3343cf,
     "0f0811111111111111110504800ffff00604800ffff00704800ffff00404801fffe00802406409024064110c6b3343cf"
     "6b3343cf000000010104800075300e0107"),
    ({"stateless_reset": 1, "disable_compatible_version": 1, "max_ack_delay": 30001,
      "max_datagram_frame_size": 1500}, False, False, 0x00000001,
     "000822222222222222220210333333333333333333333333333333330f0811111111111111110504800ffff00604800f"
     "fff00704800ffff00404801fffe008024064090240640b011f0104800075300e0107200245dc"),
    ({"stateless_reset": 1, "disable_compatible_version": 1, "max_ack_delay": 30001,
      "max_datagram_frame_size": 1500}, False, False, 0x6b3343cf,
     "000822222222222222220210333333333333333333333333333333330f0811111111111111110504800ffff00604800f"
     "fff00704800ffff00404801fffe008024064090240640b011f0104800075300e0107200245dc"),
    ({"stateless_reset": 1, "disable_compatible_version": 1, "max_ack_delay": 30001,
      "max_datagram_frame_size": 1500}, True, True, 0x6b3343cf,
     "0f0811111111111111110504800ffff00604800ffff00704800ffff00404801fffe008024064090240640b011f010480"
     "0075300e0107200245dc"),
    ({"grease_quic_bit": 1, "disable_active_migration": 1, "disable_1rtt_encryption": 1,
      "ack_delay_exponent": 5, "max_udp_payload_size": 1400, "active_connection_id_limit": 2,
      "max_idle_timeout": 1500500}, False, False, 0x6b3343cf,
     "000822222222222222220f0811111111111111110504800ffff00604800ffff00704800ffff00404801fffe008024064"
     "09024064030245780a01050c008000baad006ab200010245dd"),
    ({"max_streams_bidi": 4096, "max_data": 268435456, "max_stream_data_uni": 1200,
      "active_connection_id_limit": 8}, True, True, 0x00000001,
     "0f0811111111111111110504800ffff00604800ffff0070244b00404900000000802500009024064110c000000016b33"
     "43cf000000010104800075300e0108"),
    ({"max_streams_bidi": 4096, "max_data": 268435456, "max_stream_data_uni": 1200,
      "active_connection_id_limit": 8}, False, True, 0x6b3343cf,
     "000822222222222222220f0811111111111111110504800ffff00604800ffff0070244b0040490000000080250000902"
     "4064110c6b3343cf6b3343cf000000010104800075300e0108"),
]


@pytest.mark.parametrize("config,is_client,peer_vi,version,blob", GOLDEN_BLOBS)
def test_local_blob_bytes_unchanged(config, is_client, peer_vi, version, blob):
    p = tparams.merge_fields(tparams.LOCAL_DEFAULTS, config, remote=False)
    for _ in range(2):  # the first encodes the configuration part, the second reuses it
        out = tparams.build_local_blob(p, is_client=is_client, local_cid=b"\x11" * 8,
                                       original_dcid=b"\x22" * 8, version=version,
                                       peer_sent_version_info=peer_vi, reset_token=b"\x33" * 16)
        assert out.hex() == blob


def test_reset_token_only_when_emitted():
    p = tparams.merge_fields(tparams.LOCAL_DEFAULTS, {"stateless_reset": 1}, remote=False)
    assert tparams.needs_reset_token(p, is_client=False)
    assert not tparams.needs_reset_token(p, is_client=True)
    assert not tparams.needs_reset_token(tparams.LOCAL_DEFAULTS, is_client=False)


@pytest.mark.parametrize("value", [0, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, (1 << 62) - 1])
def test_decode_varint_exact(value):
    assert decode_varint_exact(encode_varint(value)) == value
    assert decode_varint_exact(encode_varint_fixed(value, 8)) == value
    assert decode_varint_exact(encode_varint(value) + b"\0") is None
    if value >= 64:
        assert decode_varint_exact(encode_varint(value)[:-1]) is None
    assert decode_varint_exact(b"") is None
