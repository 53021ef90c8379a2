"""The simulation's building blocks: CRYPTO reassembly into chunks (spec §2.2), frames,
packet headers, range sets, send buffers and the listener's peek at a client Initial."""
from __future__ import annotations

import pytest

from quichsd.quic.errors import QuicError, QuicErrorCode
from quichsd.quic.packet_protection import initial_keys
from quichsd.quic.versions import QUIC_V1, QUIC_V2, LongPacketType
from quichsd.sock.sim import (
    ClientHelloRejected,
    SimConnection,
    packet_dcid,
    parse_initial_header,
    peek_client_hello_alpn,
)
from quichsd.sock.sim import frames as fr
from quichsd.sock.sim.crypto_stream import Reassembly
from quichsd.sock.sim.packets import build_long_packet, build_short_packet, parse_header, unprotect_packet
from quichsd.sock.sim.rangeset import RangeSet
from quichsd.sock.sim.sendbuf import SendBuffer
from tests.sim.driver import START, sim_client

ODCID, CSCID = b"\x11" * 8, b"\x22" * 8


def client_initial(payload: bytes, pn: int = 0, version=QUIC_V1, pad: bool = True) -> bytes:
    """A protected client Initial carrying `payload` frames, padded to 1200 bytes."""
    key, _ = initial_keys(ODCID, version)
    if pad:
        payload = payload + bytes(max(0, 1160 - len(payload)))
    return build_long_packet(key, version, LongPacketType.INITIAL, ODCID, CSCID, b"", pn, None, payload)


# ---- CRYPTO reassembly (spec §2.2) -----------------------------------------------------------


def test_reassembly_chunks_in_order_never_merged():
    r = Reassembly()
    assert r.feed(0, b"0123456789") == [b"0123456789"]
    assert r.feed(20, b"KLMNOPQRST") == []  # out of order: parked
    assert r.feed(30, b"UV") == []
    assert r.feed(5, b"56789abcde") == [b"abcde"]  # overlap trimmed
    assert r.feed(15, b"fghij") == [b"fghij", b"KLMNOPQRST", b"UV"]  # parked frames follow, one each
    assert r.feed(0, b"0123") == []  # duplicate
    assert r.offset == 32 and r.parked == 0


def test_reassembly_limit():
    r = Reassembly(limit=10)
    with pytest.raises(QuicError) as info:
        r.feed(100, bytes(11))
    assert info.value.error_code == QuicErrorCode.CRYPTO_BUFFER_EXCEEDED


def test_connection_queues_one_entry_per_in_order_crypto_frame():
    server = SimConnection(is_client=False, original_dcid=ODCID, peer_cid=CSCID, now=START)
    hello = b"\x01\x00\x00\x1c" + bytes(range(28))  # 32 bytes of "ClientHello"
    frames_by_packet = [
        fr.Crypto(0, hello[:10]).encode(),
        fr.Crypto(20, hello[20:]).encode(),  # arrives early: parked
        fr.Crypto(5, hello[5:20]).encode(),  # overlaps what was delivered
    ]
    for pn, payload in enumerate(frames_by_packet):
        server.receive_datagram(client_initial(payload, pn), ("c", 1), START)
    entries = []
    while (item := server.recv_crypto(1 << 16)) is not None:
        entries.append(item)
    assert entries == [(1, hello[:10], True), (1, hello[10:20], True), (1, hello[20:], True)]
    assert server.pending_readable() is False


# ---- frames ----------------------------------------------------------------------------------


ROUND_TRIP = [
    fr.Ping(),
    fr.Ack(((10, 13), (2, 6), (0, 1)), delay=7),
    fr.Ack(((0, 1),), delay=0, ecn=(1, 2, 3)),
    fr.ResetStream(4, 9, 1000),
    fr.StopSending(4, 9),
    fr.Crypto(1000, b"hello"),
    fr.NewToken(b"tok"),
    fr.Stream(8, 0, b"data", True),
    fr.Stream(1 << 20, 1 << 33, b"x" * 300, False),
    fr.MaxData(1 << 40),
    fr.MaxStreamData(3, 99),
    fr.MaxStreams(True, 100),
    fr.MaxStreams(False, 7),
    fr.DataBlocked(5),
    fr.StreamDataBlocked(2, 6),
    fr.StreamsBlocked(False, 3),
    fr.NewConnectionId(3, 1, b"c" * 8, b"t" * 16),
    fr.RetireConnectionId(2),
    fr.PathChallenge(b"12345678"),
    fr.PathResponse(b"87654321"),
    fr.ConnectionClose(0x10A, 0x06, b"bad"),
    fr.ConnectionClose(42, 0, b"app", app=True),
    fr.HandshakeDone(),
    fr.Datagram(b"dgram"),
]


@pytest.mark.parametrize("frame", ROUND_TRIP, ids=lambda f: type(f).__name__)
def test_frame_round_trip(frame):
    [(ftype, parsed)] = fr.parse_frames(frame.encode())
    assert parsed == frame


def test_padding_and_several_frames():
    payload = fr.Ping().encode() + bytes(5) + fr.MaxData(3).encode()
    parsed = [f for _, f in fr.parse_frames(payload)]
    assert parsed == [fr.Ping(), fr.Padding(5), fr.MaxData(3)]


@pytest.mark.parametrize("payload,code", [
    (b"\x06\x00\x05ab", QuicErrorCode.FRAME_ENCODING_ERROR),  # CRYPTO past the packet
    (b"\x02\x05\x00\x00\x06", QuicErrorCode.FRAME_ENCODING_ERROR),  # ACK below 0
    (b"\x21", QuicErrorCode.FRAME_ENCODING_ERROR),  # unknown type
    (b"", QuicErrorCode.PROTOCOL_VIOLATION),  # no frames
])
def test_malformed_frames(payload, code):
    with pytest.raises(QuicError) as info:
        fr.parse_frames(payload)
    assert info.value.error_code == code


def test_frames_allowed_per_packet_type():
    fr.check_allowed(0x06, "initial")
    for ftype, kind in ((0x08, "initial"), (0x1E, "handshake"), (0x1D, "handshake"),
                        (0x02, "0rtt"), (0x06, "0rtt"), (0x1E, "0rtt")):
        with pytest.raises(QuicError) as info:
            fr.check_allowed(ftype, kind)
        assert info.value.error_code == QuicErrorCode.PROTOCOL_VIOLATION


# ---- packets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2], ids=["v1", "v2"])
def test_long_header_round_trip_and_coalescing(version):
    ckey, skey = initial_keys(ODCID, version)
    first = build_long_packet(skey, version, LongPacketType.INITIAL, CSCID, ODCID, b"", 0, None, b"\x01")
    second = build_long_packet(skey, version, LongPacketType.HANDSHAKE, CSCID, ODCID, None, 5, 3,
                               b"\x01" * 40)
    datagram = first + second
    h1 = parse_header(datagram, 0, 8)
    assert h1.packet_type is LongPacketType.INITIAL and h1.version == version.number
    assert (h1.dcid, h1.scid, h1.token, h1.end) == (CSCID, ODCID, b"", len(first))
    h2 = parse_header(datagram, h1.end, 8)
    assert h2.packet_type is LongPacketType.HANDSHAKE and h2.end == len(datagram)
    first_byte, pn, payload = unprotect_packet(skey, datagram, h1, -1)
    assert pn == 0 and payload.rstrip(b"\0") == b"\x01"
    _, pn2, payload2 = unprotect_packet(skey, datagram, h2, 4)
    assert pn2 == 5 and payload2 == b"\x01" * 40


def test_short_header_round_trip():
    key, _ = initial_keys(ODCID, QUIC_V1)
    packet = build_short_packet(key, b"D" * 8, 1000, 998, b"\x01\x01", key_phase=1)
    header = parse_header(packet, 0, 8)
    assert not header.is_long and header.dcid == b"D" * 8
    first, pn, payload = unprotect_packet(key, packet, header, 999)
    assert pn == 1000 and first & 0x04 and payload.rstrip(b"\0") == b"\x01\x01"


# ---- the listener's peek (spec §2.7) -----------------------------------------------------------


def _hello(session_id: bytes = b"", alpn: list[bytes] | None = None) -> bytes:
    exts = b""
    if alpn is not None:
        items = b"".join(bytes((len(a),)) + a for a in alpn)
        body = len(items).to_bytes(2, "big") + items
        exts += b"\x00\x10" + len(body).to_bytes(2, "big") + body
    exts = b"\x00\x2b\x00\x03\x02\x03\x04" + exts  # supported_versions first
    msg = (b"\x03\x03" + bytes(32) + bytes((len(session_id),)) + session_id + b"\x00\x02\x13\x01"
           + b"\x01\x00" + len(exts).to_bytes(2, "big") + exts)
    return b"\x01" + len(msg).to_bytes(3, "big") + msg


def test_parse_initial_header_and_alpn_peek():
    datagram = client_initial(fr.Crypto(0, _hello(alpn=[b"h3", b"smb"])).encode())
    assert parse_initial_header(datagram) == (1, ODCID, CSCID, b"")
    assert packet_dcid(datagram) == ODCID
    assert peek_client_hello_alpn(datagram) == [b"h3", b"smb"]
    assert peek_client_hello_alpn(client_initial(fr.Crypto(0, _hello()).encode())) == []


def test_alpn_peek_of_a_real_client_initial():
    client = sim_client()
    client.start(START)
    (datagram,) = client.send(START)
    assert parse_initial_header(datagram)[1] == client.conn.original_dcid
    assert peek_client_hello_alpn(datagram) == [b"quichsd-sim"]


def test_alpn_peek_rejects_and_abstains():
    with pytest.raises(ClientHelloRejected):  # middlebox compatibility mode
        peek_client_hello_alpn(client_initial(fr.Crypto(0, _hello(b"S" * 32, [b"h3"])).encode()))
    with pytest.raises(ClientHelloRejected):  # not a ClientHello
        peek_client_hello_alpn(client_initial(fr.Crypto(0, b"\x02\x00\x00\x01x").encode()))
    # first frame not CRYPTO at offset 0: no ALPN seen, any listener (the kernel's
    # quic_packet_get_alpn() returns 0 without ALPN data; picoquic sends PING first)
    assert peek_client_hello_alpn(client_initial(fr.Ping().encode())) is None
    assert peek_client_hello_alpn(client_initial(fr.Crypto(5, b"abc").encode())) is None
    ping_first = fr.Ping().encode() + fr.Crypto(0, _hello(alpn=[b"h3"])).encode()
    assert peek_client_hello_alpn(client_initial(ping_first)) is None
    # the hello cut before its ALPN extension: no decision
    hello = _hello(alpn=[b"h3"])
    assert peek_client_hello_alpn(client_initial(fr.Crypto(0, hello[:-6]).encode())) is None


def test_parse_initial_header_refuses_small_or_other_packets():
    payload = fr.Crypto(0, _hello()).encode()
    assert parse_initial_header(client_initial(payload, pad=False)) is None  # < 1200 bytes
    key, _ = initial_keys(ODCID, QUIC_V1)
    handshake = build_long_packet(key, QUIC_V1, LongPacketType.HANDSHAKE, ODCID, CSCID, None, 0, None,
                                  bytes(1200))
    assert parse_initial_header(handshake) is None
    assert packet_dcid(handshake) == ODCID
    assert parse_initial_header(b"\x40" + bytes(1300)) is None


# ---- range sets and send buffers ---------------------------------------------------------------


def test_rangeset():
    rs = RangeSet()
    rs.add(5, 10)
    rs.add(0, 2)
    rs.add(10, 12)
    assert list(rs) == [(0, 2), (5, 12)]
    rs.add(1, 6)
    assert list(rs) == [(0, 12)]
    rs.subtract(3, 4)
    assert list(rs) == [(0, 3), (4, 12)] and 3 not in rs and 4 in rs
    assert list(rs.ranges_descending()) == [(4, 12), (0, 3)]


def test_send_buffer_retransmits_lost_ranges_first():
    buf = SendBuffer()
    buf.write(b"abcdefghij", fin=True)
    assert buf.next_chunk(4) == (0, b"abcd", False)
    assert buf.next_chunk(100) == (4, b"efghij", True)
    buf.on_lost(0, 4, False)
    buf.on_acked(4, 10, True)
    assert buf.next_chunk(2) == (0, b"ab", False)
    assert buf.next_chunk(10) == (2, b"cd", False)
    assert buf.next_chunk(10) is None
    buf.on_acked(0, 4, False)
    assert buf.all_acked
