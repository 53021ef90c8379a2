"""Target quic_connection: the simulation's receive path (quichsd/sock/sim/receiver.py and
what its frame handlers reach: ACK processing and loss recovery, CRYPTO reassembly, streams
and flow control, connection IDs, close) on a server connection, with the fuzzer's frames
inside correctly protected packets, so they get past the AEAD that random bytes never pass.

The connection is one a listener made from a client Initial; its Handshake and 1-RTT keys
are installed (from fixed secrets) with a valid client transport parameter blob, so it is
established and every packet type is read. After each datagram the connection is asked for
what it would send and its timers run, as the endpoint does.

Input: up to eight packets, each `level byte, 2-byte length, payload` (level mod 3: Initial,
Handshake, 1-RTT); a packet's payload is the frames, sealed with that level's client key at
the next packet number; Initials are padded to a 1200-byte datagram.

A bug is any exception out of receive_datagram(), datagrams_to_send() or handle_timer(): a
peer's bad frame must close the connection with a QUIC error, never raise; and a connection
that closed must stay closed.
"""
from __future__ import annotations

from quichsd.quic.packet_protection import AES_128_GCM, PacketKey, initial_keys
from quichsd.quic.versions import QUIC_V1, LongPacketType
from quichsd.sock.sim.connection import SimConnection
from quichsd.sock.sim.levels import APP, HANDSHAKE
from quichsd.sock.sim.packets import build_long_packet, build_short_packet
from quichsd.sock.sim.state import ConnState

T = 1_780_000_000.0
ADDR = ("127.0.0.1", 40001)
ODCID, CLIENT_CID, SERVER_CID = bytes(range(8)), b"clientid", b"serverid"
SECRETS = {HANDSHAKE: bytes(range(32, 64)), APP: bytes(range(64, 96))}
# RFC 9000 §18.2 parameters a client sends: initial_source_connection_id and flow control.
CLIENT_TP = (b"\x0f\x08" + CLIENT_CID + b"\x04\x04\x80\x10\x00\x00\x05\x04\x80\x01\x00\x00"
             b"\x06\x04\x80\x01\x00\x00\x07\x04\x80\x01\x00\x00\x08\x01\x10\x09\x01\x10")
MAX_PACKETS = 8
_CLIENT_INITIAL_KEY = initial_keys(ODCID, QUIC_V1)[0]


def server() -> SimConnection:
    conn = SimConnection(is_client=False, version=QUIC_V1.number, original_dcid=ODCID, peer_cid=CLIENT_CID,
                         local_cid=SERVER_CID, now=T, peer_addr=ADDR)
    for level in (HANDSHAKE, APP):
        if level == APP:
            conn.set_peer_transport_params_blob(CLIENT_TP)
        for send in (True, False):
            conn.install_secret(level, send, AES_128_GCM.kernel_type, SECRETS[level])
    return conn


_KEYS = {level: PacketKey(AES_128_GCM, secret, QUIC_V1) for level, secret in SECRETS.items()}


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 3 <= len(data) and len(out) < MAX_PACKETS:
        level = data[pos] % 3
        n = int.from_bytes(data[pos + 1:pos + 3], "big")
        out.append((level, data[pos + 3:pos + 3 + n]))
        pos += 3 + n
    return out


def datagram(level: int, pn: int, payload: bytes) -> bytes:
    if level == 0:
        padded = payload + bytes(max(0, 1200 - 60 - len(payload)))
        return build_long_packet(_CLIENT_INITIAL_KEY, QUIC_V1, LongPacketType.INITIAL, ODCID, CLIENT_CID,
                                 b"", pn, None, padded)
    if level == 1:
        return build_long_packet(_KEYS[HANDSHAKE], QUIC_V1, LongPacketType.HANDSHAKE, SERVER_CID, CLIENT_CID,
                                 None, pn, None, payload)
    return build_short_packet(_KEYS[APP], SERVER_CID, pn, None, payload)


def one_input(data: bytes) -> None:
    conn = server()
    now = T
    next_pn = [0, 0, 0]
    for level, payload in _packets(data):
        packet = datagram(level, next_pn[level], payload[:1400])
        next_pn[level] += 1
        was_closed = conn.state is ConnState.CLOSED
        now += 0.01
        conn.receive_datagram(packet, ADDR, now)
        assert not was_closed or conn.state is ConnState.CLOSED, "a closed connection opened again"
        conn.datagrams_to_send(now)
        timer = conn.get_timer()
        if timer is not None and timer <= now + 1:
            conn.handle_timer(max(now, timer))
            conn.datagrams_to_send(max(now, timer))
