"""The checks, as data: each breaks one MUST of RFC 9000, RFC 9001 or RFC 8446 (in a way a
server can see) and names the error the server MUST close the connection with.

Stream IDs, from the server's side (RFC 9000 §2.1): 0, 4, ... are the client's
bidirectional streams, 2, 6, ... its unidirectional ones (receive-only for the server);
1, 5, ... the server's bidirectional and 3, 7, ... its unidirectional ones (send-only for
the server). The server-initiated streams used are number 50 of each kind: within the
limits our client announces (100 each), so the only thing wrong is that the server has not
opened them (it has not opened 50 streams of its own so early).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from ..quic.errors import QuicErrorCode as E
from ..quic.transport_params import PARAMETER_IDS as _ID
from ..quic.varint import encode_varint as v
from ..sock.sim import frames as fr
from ..tls.constants import AlertDescription as A
from ..tls.constants import ExtensionType as X
from .mischief import (
    APP,
    HANDSHAKE,
    INITIAL,
    PeerView,
    RewriterFactory,
    hello_edit,
    packet_edit,
    tp_edit,
    tp_varint,
    tp_without,
    with_alpn,
    with_psk,
    without_extension,
)
from .outcome import alert

__all__ = ["CHECKS", "Check", "select"]


@dataclass(frozen=True)
class Check:
    name: str
    section: str  # where the MUST is
    does: str  # what our client does wrong
    expect: tuple[int, ...]  # the error codes the RFC allows (most name one)
    rewriter: RewriterFactory


SERVER_BIDI_NOT_OPENED = 4 * 50 + 1
SERVER_UNI = 4 * 50 + 3  # send-only for the server (and not opened yet either)
CLIENT_UNI = 2  # receive-only for the server
MAX_STREAMS = 1 << 60  # RFC 9000 §4.6
MAX_OFFSET = (1 << 62) - 1  # RFC 9000 §19.6, §19.8
_CID = bytes(range(1, 9))
_TOKEN = bytes(range(16))
_PREFERRED_ADDRESS = (IPv4Address("127.0.0.1").packed + (4433).to_bytes(2, "big") + bytes(16) + bytes(2)
                      + bytes((len(_CID),)) + _CID + _TOKEN)


def _over_stream_limit(peer: PeerView) -> bytes:
    # The client's bidirectional stream number L has ID 4L: the first one over a limit of L.
    return fr.encode_stream(4 * peer.param("initial_max_streams_bidi"), 0, b"x", False)


def _over_stream_credit(peer: PeerView) -> bytes:
    return fr.encode_stream(0, peer.param("initial_max_stream_data_bidi_remote"), b"x", False)


def _too_many_connection_ids(peer: PeerView) -> bytes:
    # With the handshake's CID, `limit` more are one too many. Sequence numbers far above
    # the ones our client issues itself, none retired.
    limit = peer.param("active_connection_id_limit", 2)
    return b"".join(fr.NewConnectionId(1000 + i, 0, bytes((0xC0, i)) + _CID[:6], bytes((i,)) * 16).encode()
                    for i in range(limit))


def _ack_below_zero(peer: PeerView) -> bytes:
    # Largest acknowledged 0 with a first range of 5: packet numbers -5..0 (RFC 9000 §19.3.1).
    return b"\x02" + v(0) + v(0) + v(0) + v(5)


def _tp(name: str, section: str, does: str, rewriter: RewriterFactory) -> Check:
    return Check(name, section, does, (E.TRANSPORT_PARAMETER_ERROR,), rewriter)


def _app(name: str, section: str, does: str, expect: tuple[int, ...],
         frames: bytes | Callable[[PeerView], bytes]) -> Check:
    """Frames added to our 1-RTT packets."""
    return Check(name, section, does, expect, packet_edit(APP, frames))


_TLS_CHECKS = (
    Check("alpn-no-overlap", "RFC 9001 §8.1", "offers only an ALPN protocol no server has",
          (alert(A.no_application_protocol),), hello_edit(with_alpn(b"quichsd-spec-unknown-protocol"))),
    Check("alpn-missing", "RFC 9001 §8.1", "sends no ALPN extension",
          (alert(A.no_application_protocol),), hello_edit(without_extension(X.ALPN))),
    Check("no-quic-transport-parameters", "RFC 9001 §8.2", "sends no quic_transport_parameters extension",
          (alert(A.missing_extension),), hello_edit(without_extension(X.QUIC_TRANSPORT_PARAMETERS))),
    Check("no-supported-versions", "RFC 8446 §D.2, RFC 9001 §4.2",
          "sends a TLS 1.2 ClientHello (no supported_versions)",
          (alert(A.protocol_version),), hello_edit(without_extension(X.SUPPORTED_VERSIONS))),
    Check("no-signature-algorithms", "RFC 8446 §9.2", "asks for a certificate without signature_algorithms",
          (alert(A.missing_extension),), hello_edit(without_extension(X.SIGNATURE_ALGORITHMS))),
    Check("key-share-without-groups", "RFC 8446 §9.2", "sends key_share without supported_groups",
          (alert(A.missing_extension),), hello_edit(without_extension(X.SUPPORTED_GROUPS))),
    Check("no-cipher-suite-overlap", "RFC 8446 §4.1.1", "offers only a cipher suite no server has (GREASE)",
          (alert(A.handshake_failure), alert(A.insufficient_security)),
          hello_edit(lambda hello: replace(hello, cipher_suites=[0x0A0A]))),
    Check("compression-not-null", "RFC 8446 §4.1.2", "offers DEFLATE as its only compression method",
          (alert(A.illegal_parameter),),
          hello_edit(lambda hello: replace(hello, legacy_compression_methods=b"\x01"))),
    Check("pre-shared-key-not-last", "RFC 8446 §4.2.11", "puts pre_shared_key first among the extensions",
          (alert(A.illegal_parameter),), hello_edit(with_psk(first=True))),
    Check("pre-shared-key-without-modes", "RFC 8446 §4.2.9, §9.2",
          "offers pre_shared_key without psk_key_exchange_modes",
          (alert(A.missing_extension),), hello_edit(with_psk(first=False, keep_modes=False))),
)


_TRANSPORT_PARAMETER_CHECKS = (
    _tp("tp-no-initial-source-cid", "RFC 9000 §7.3", "leaves out initial_source_connection_id",
        tp_without(_ID["initial_source_connection_id"])),
    _tp("tp-initial-source-cid-mismatch", "RFC 9000 §7.3",
        "sends an initial_source_connection_id other than its packets' SCID",
        tp_edit(add=((_ID["initial_source_connection_id"], _CID),))),
    _tp("tp-original-destination-cid", "RFC 9000 §18.2",
        "sends original_destination_connection_id (server only)",
        tp_edit(add=((_ID["original_destination_connection_id"], _CID),))),
    _tp("tp-preferred-address", "RFC 9000 §18.2", "sends preferred_address (server only)",
        tp_edit(add=((_ID["preferred_address"], _PREFERRED_ADDRESS),))),
    _tp("tp-retry-source-cid", "RFC 9000 §18.2", "sends retry_source_connection_id (server only)",
        tp_edit(add=((_ID["retry_source_connection_id"], _CID),))),
    _tp("tp-stateless-reset-token", "RFC 9000 §18.2", "sends stateless_reset_token (server only)",
        tp_edit(add=((_ID["stateless_reset_token"], _TOKEN),))),
    _tp("tp-max-udp-payload-size", "RFC 9000 §18.2, §7.4", "sends max_udp_payload_size 1199 (under 1200)",
        tp_varint(_ID["max_udp_payload_size"], 1199)),
    _tp("tp-ack-delay-exponent", "RFC 9000 §18.2, §7.4", "sends ack_delay_exponent 21 (over 20)",
        tp_varint(_ID["ack_delay_exponent"], 21)),
    _tp("tp-max-ack-delay", "RFC 9000 §18.2, §7.4", "sends max_ack_delay 2^14",
        tp_varint(_ID["max_ack_delay"], 1 << 14)),
    _tp("tp-active-connection-id-limit", "RFC 9000 §18.2", "sends active_connection_id_limit 1 (under 2)",
        tp_varint(_ID["active_connection_id_limit"], 1)),
    _tp("tp-max-streams-bidi", "RFC 9000 §4.6, §18.2", "sends initial_max_streams_bidi 2^60 + 1",
        tp_varint(_ID["initial_max_streams_bidi"], MAX_STREAMS + 1)),
    _tp("tp-max-streams-uni", "RFC 9000 §4.6, §18.2", "sends initial_max_streams_uni 2^60 + 1",
        tp_varint(_ID["initial_max_streams_uni"], MAX_STREAMS + 1)),
)

_PACKET_CHECKS = (
    Check("reserved-bits-initial", "RFC 9000 §17.2", "sets the reserved bits of its first Initial packet",
          (E.PROTOCOL_VIOLATION,), packet_edit(INITIAL, header_bits=0x0C)),
    Check("reserved-bits-handshake", "RFC 9000 §17.2", "sets the reserved bits of its first Handshake packet",
          (E.PROTOCOL_VIOLATION,), packet_edit(HANDSHAKE, header_bits=0x0C)),
    Check("reserved-bits-1rtt", "RFC 9000 §17.3.1", "sets the reserved bits of its first 1-RTT packet",
          (E.PROTOCOL_VIOLATION,), packet_edit(APP, header_bits=0x18)),
    Check("packet-without-frames", "RFC 9000 §12.4", "sends a 1-RTT packet with no frames",
          (E.PROTOCOL_VIOLATION,), packet_edit(APP, None, mode="replace", pn_length=4)),
    Check("stream-in-handshake-packet", "RFC 9000 §12.4", "sends a STREAM frame in a Handshake packet",
          (E.PROTOCOL_VIOLATION,),
          packet_edit(HANDSHAKE, fr.encode_stream(0, 0, b"x", False), mode="prepend")),
    Check("max-data-in-initial-packet", "RFC 9000 §12.4",
          "sends a MAX_DATA frame in its first Initial packet",
          (E.PROTOCOL_VIOLATION,), packet_edit(INITIAL, fr.MaxData(1 << 20).encode())),
)

_FRAME_CHECKS = (
    _app("unknown-frame-type", "RFC 9000 §12.4", "sends a frame of unknown type 0x3f",
         (E.FRAME_ENCODING_ERROR,), v(0x3F)),
    _app("new-token-from-client", "RFC 9000 §19.7", "sends a NEW_TOKEN frame",
         (E.PROTOCOL_VIOLATION,), fr.NewToken(b"quichsd-spec").encode()),
    _app("handshake-done-from-client", "RFC 9000 §19.20", "sends a HANDSHAKE_DONE frame",
         (E.PROTOCOL_VIOLATION,), fr.HandshakeDone().encode()),
    _app("max-stream-data-unopened-stream", "RFC 9000 §19.10",
         "sends MAX_STREAM_DATA for a server-initiated stream the server has not opened",
         (E.STREAM_STATE_ERROR,), fr.MaxStreamData(SERVER_BIDI_NOT_OPENED, 1 << 20).encode()),
    _app("max-stream-data-receive-only", "RFC 9000 §19.10",
         "sends MAX_STREAM_DATA for its own unidirectional stream (receive-only for the server)",
         (E.STREAM_STATE_ERROR,), fr.MaxStreamData(CLIENT_UNI, 1 << 20).encode()),
    _app("stream-on-send-only", "RFC 9000 §19.8", "sends STREAM on a server-initiated unidirectional stream",
         (E.STREAM_STATE_ERROR,), fr.encode_stream(SERVER_UNI, 0, b"x", False)),
    _app("stream-unopened-stream", "RFC 9000 §19.8",
         "sends STREAM on a server-initiated bidirectional stream the server has not opened",
         (E.STREAM_STATE_ERROR,), fr.encode_stream(SERVER_BIDI_NOT_OPENED, 0, b"x", False)),
    _app("reset-stream-send-only", "RFC 9000 §19.4",
         "sends RESET_STREAM for a server-initiated unidirectional stream",
         (E.STREAM_STATE_ERROR,), fr.ResetStream(SERVER_UNI, 0, 0).encode()),
    _app("stop-sending-receive-only", "RFC 9000 §19.5",
         "sends STOP_SENDING for its own unidirectional stream (receive-only for the server)",
         (E.STREAM_STATE_ERROR,), fr.StopSending(CLIENT_UNI, 0).encode()),
    _app("stop-sending-unopened-stream", "RFC 9000 §19.5",
         "sends STOP_SENDING for a server-initiated stream the server has not opened",
         (E.STREAM_STATE_ERROR,), fr.StopSending(SERVER_BIDI_NOT_OPENED, 0).encode()),
    _app("stream-data-blocked-send-only", "RFC 9000 §19.13",
         "sends STREAM_DATA_BLOCKED for a server-initiated unidirectional stream",
         (E.STREAM_STATE_ERROR,), fr.StreamDataBlocked(SERVER_UNI, 0).encode()),
    _app("max-streams-over-2^60", "RFC 9000 §4.6, §19.11", "sends MAX_STREAMS (bidirectional) 2^60 + 1",
         (E.FRAME_ENCODING_ERROR,), b"\x12" + v(MAX_STREAMS + 1)),
    _app("streams-blocked-over-2^60", "RFC 9000 §19.14", "sends STREAMS_BLOCKED (bidirectional) 2^60 + 1",
         (E.STREAM_LIMIT_ERROR, E.FRAME_ENCODING_ERROR), b"\x16" + v(MAX_STREAMS + 1)),
    _app("stream-over-stream-limit", "RFC 9000 §4.6",
         "opens the bidirectional stream just over the server's initial_max_streams_bidi",
         (E.STREAM_LIMIT_ERROR,), _over_stream_limit),
    _app("stream-over-flow-control", "RFC 9000 §4.1",
         "sends a byte past the server's initial_max_stream_data_bidi_remote",
         (E.FLOW_CONTROL_ERROR,), _over_stream_credit),
    _app("stream-beyond-2^62", "RFC 9000 §19.8", "sends STREAM data ending beyond 2^62 - 1",
         (E.FRAME_ENCODING_ERROR, E.FLOW_CONTROL_ERROR), fr.encode_stream(0, MAX_OFFSET, b"x", False)),
    _app("crypto-beyond-2^62", "RFC 9000 §19.6", "sends CRYPTO data ending beyond 2^62 - 1",
         (E.FRAME_ENCODING_ERROR, E.CRYPTO_BUFFER_EXCEEDED), fr.encode_crypto(MAX_OFFSET, b"x")),
    _app("ack-range-below-zero", "RFC 9000 §19.3.1", "sends an ACK whose first range goes below packet 0",
         (E.FRAME_ENCODING_ERROR,), _ack_below_zero),
    _app("new-connection-id-retire-prior-to", "RFC 9000 §19.15",
         "sends NEW_CONNECTION_ID with Retire Prior To above its Sequence Number",
         (E.FRAME_ENCODING_ERROR,), fr.NewConnectionId(1000, 1001, _CID, _TOKEN).encode()),
    _app("new-connection-id-empty-cid", "RFC 9000 §19.15",
         "sends NEW_CONNECTION_ID with a zero-length connection ID",
         (E.FRAME_ENCODING_ERROR,), fr.NewConnectionId(1000, 0, b"", _TOKEN).encode()),
    _app("too-many-connection-ids", "RFC 9000 §5.1.1",
         "gives the server more connection IDs than its active_connection_id_limit",
         (E.CONNECTION_ID_LIMIT_ERROR,), _too_many_connection_ids),
    _app("retire-unissued-connection-id", "RFC 9000 §19.16",
         "retires connection ID sequence number 1000, which the server never issued",
         (E.PROTOCOL_VIOLATION,), fr.RetireConnectionId(1000).encode()),
)

CHECKS: tuple[Check, ...] = _TLS_CHECKS + _TRANSPORT_PARAMETER_CHECKS + _PACKET_CHECKS + _FRAME_CHECKS


def select(patterns: str | None) -> list[Check]:
    """The checks whose name contains one of the comma-separated `patterns` (all if None)."""
    if not patterns:
        return list(CHECKS)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    return [c for c in CHECKS if any(p in c.name for p in wanted)]
