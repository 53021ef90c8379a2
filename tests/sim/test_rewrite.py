"""The SendRewriter seam (sock/sim/rewrite.py): what a rewrite asks for is what leaves, still
protected so the peer can open it; without a rewriter nothing changes."""
from __future__ import annotations

import pytest

from quichsd.quic.errors import QuicError, QuicErrorCode
from quichsd.quic.packet_protection import initial_keys
from quichsd.quic.transport_params import TransportParameters
from quichsd.quic.versions import SUPPORTED_VERSIONS
from quichsd.sock.sim import frames as fr
from quichsd.sock.sim.connection import SimConnection
from quichsd.sock.sim.levels import INITIAL
from quichsd.sock.sim.listener_peek import OpenedInitial, open_client_initial
from quichsd.sock.sim.packets import parse_header
from quichsd.sock.sim.rewrite import OutgoingPacket, SendRewriter
from quichsd.spec.mischief import PeerView, hello_edit, tp_without, without_extension
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import TlsConfig
from quichsd.tls.constants import ExtensionType
from quichsd.tls.events import SendHandshake
from quichsd.tls.messages import ClientHello, Reader

HELLO = b"\x01\x00\x00\x04spec"  # the CRYPTO bytes do not matter to the packet layer


def first_initial(rewriter: SendRewriter | None) -> OpenedInitial:
    """Our client's first Initial packet, opened as the server would."""
    conn = SimConnection(is_client=True, now=0.0, peer_addr=("127.0.0.1", 4433))
    if rewriter is not None:
        conn.send_rewriter = rewriter
    conn.send_crypto(INITIAL, HELLO)
    (datagram, _), = conn.datagrams_to_send(0.0)
    header = parse_header(datagram, 0, 8)
    client_key, _ = initial_keys(header.dcid, SUPPORTED_VERSIONS[header.version])
    return open_client_initial(datagram, header, client_key)


def test_without_a_rewriter_the_packet_is_ours() -> None:
    packet = first_initial(None)
    assert packet.first & 0x0C == 0 and packet.first & 0x03 == 0  # reserved bits clear, 1-byte pn
    frames = fr.parse_frames(packet.payload)
    assert frames[0][1] == fr.Crypto(0, HELLO)


def test_header_bits_frames_and_packet_number_length_are_applied_under_protection() -> None:
    def rewrite(packet: OutgoingPacket) -> OutgoingPacket:
        return OutgoingPacket(packet.level, packet.payload + fr.Ping().encode(), header_bits=0x0C,
                              pn_length=4)

    packet = first_initial(SendRewriter(packet=rewrite))
    assert packet.first & 0x0C == 0x0C and packet.first & 0x03 == 3
    frames = fr.parse_frames(packet.payload)
    assert frames[0][1] == fr.Crypto(0, HELLO) and frames[-1][1] == fr.Ping()


def test_a_packet_without_frames_opens_to_an_empty_payload() -> None:
    packet = first_initial(SendRewriter(packet=lambda p: OutgoingPacket(p.level, b"", pn_length=4)))
    assert packet.payload == b""
    with pytest.raises(QuicError) as err:
        fr.parse_frames(packet.payload)
    assert err.value.error_code == QuicErrorCode.PROTOCOL_VIOLATION


def test_client_hello_rewrite_is_what_is_sent() -> None:
    rewriter = hello_edit(without_extension(ExtensionType.ALPN))(PeerView())
    engine = ClientEngine(TlsConfig(alpn_protocols=[b"h3"], verify_peer=False, transport_parameters=b"",
                                    client_hello_rewrite=rewriter.client_hello))
    (send,) = [e for e in engine.start(0.0) if isinstance(e, SendHandshake)]
    reader = Reader(send.data[4:])
    hello = ClientHello.decode(reader)
    assert ExtensionType.ALPN not in hello.extensions
    assert ExtensionType.SUPPORTED_VERSIONS in hello.extensions


def test_transport_parameter_rewrite_drops_the_id() -> None:
    conn = SimConnection(is_client=True, now=0.0)
    blob = conn.local_transport_params_blob()
    rewritten = tp_without(0x0F)(PeerView()).rewrite_transport_parameters(blob)
    assert TransportParameters.decode(blob, "client").initial_source_connection_id == conn.local_cid
    decoded = TransportParameters.decode(rewritten, "client")
    assert decoded.initial_source_connection_id is None
    assert decoded.initial_max_data == TransportParameters.decode(blob, "client").initial_max_data
