"""The fuzz targets (fuzz/) without atheris: every committed seed and every regression input
goes through its target's one-input function, so an input that once crashed a parser fails
the default suite if the bug comes back. Also: the tls_engine target's handshakes are
reproducible (what makes its seeds meaningful), and the targets do report a planted bug.
"""
from __future__ import annotations

import errno
import importlib
from pathlib import Path

import pytest

from fuzz import TARGETS
from fuzz.handshakes import MODES, Conversation, recorded
from quichsd.daemon.netlink import NetlinkReplyError, accept_msg, decode, error_code
from quichsd.sock.sim.state import ConnState
from quichsd.tls import extensions

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"


def _inputs(kind: str) -> list[tuple[str, Path]]:
    return [(target, path) for target in TARGETS
            for path in sorted((FUZZ / kind / target).glob("*")) if path.is_file()]


SEEDS = _inputs("corpus")
REGRESSIONS = _inputs("regressions")


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_target_has_seeds(target: str) -> None:
    assert any(t == target for t, _ in SEEDS), f"no seeds for {target}: run python -m fuzz.make_seeds"


@pytest.mark.parametrize("target", list(TARGETS))
def test_seed_corpus_replays_cleanly(target: str) -> None:
    one_input = importlib.import_module(TARGETS[target]).one_input
    paths = [path for t, path in SEEDS if t == target]
    for path in paths:
        one_input(path.read_bytes())  # raises on a bug; the message names the input below
    assert paths


@pytest.mark.parametrize(("target", "path"), REGRESSIONS, ids=[f"{t}/{p.name}" for t, p in REGRESSIONS])
def test_regression_input_stays_fixed(target: str, path: Path) -> None:
    importlib.import_module(TARGETS[target]).one_input(path.read_bytes())


def test_seed_corpora_stay_small() -> None:
    total = sum(path.stat().st_size for _, path in SEEDS + REGRESSIONS)
    assert 0 < total < 1_000_000


@pytest.mark.parametrize("mode", MODES)
def test_engine_handshakes_are_reproducible(mode: str) -> None:
    conv = Conversation(mode).run()
    assert conv.completed()
    assert conv.sent == list(recorded(mode)), "the same handshake gave other bytes: seeds would be stale"


def test_engine_target_reports_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug planted in the server (a KeyError while reading ALPN) surfaces from the engine
    as internal_error; the target must call that a bug, not a clean rejection."""
    from fuzz import tls_engine

    def broken(data: bytes) -> list[bytes]:
        raise KeyError("planted")

    monkeypatch.setattr(extensions, "decode_alpn", broken)
    hello = recorded("full")[0][2]
    with pytest.raises(AssertionError, match="internal_error"):
        tls_engine.one_input(tls_engine.header(("full", 0)) + hello)


def test_short_netlink_messages_fail_the_request() -> None:
    """Found by fuzz/netlink_attrs: a message shorter than its headers raised struct.error
    (NLMSG_ERROR) or IndexError (a family message); now it is EPROTO, an OSError the
    worker already handles for a failed request."""
    short = (17).to_bytes(4, "little") + bytes(13)
    for read in (error_code, lambda m: decode(accept_msg, m)):
        with pytest.raises(NetlinkReplyError) as err:
            read(short)
        assert err.value.errno == errno.EPROTO


def test_session_data_with_a_non_ascii_name_is_a_decode_error() -> None:
    """Found by fuzz/tls_messages: session data (SESSION_TICKET, --session FILE,
    HandshakeConfig.session_data) naming a non-ASCII server raised UnicodeDecodeError,
    which quic_handshake() let through instead of a HandshakeError."""
    from fuzz.handshakes import _session
    from quichsd.tls.constants import AlertDescription
    from quichsd.tls.errors import TlsError
    from quichsd.tls.session import SessionData

    good = _session()
    blob = good.encode().replace(b"\x09localhost", b"\x09localh\xf6st")
    assert blob != good.encode()
    with pytest.raises(TlsError) as err:
        SessionData.decode(blob)
    assert err.value.alert == AlertDescription.decode_error
    assert SessionData.decode(good.encode()) == good


@pytest.mark.parametrize("final_size", [(1 << 62) - 1, 1_048_561])
def test_reset_stream_final_size_over_credit_is_flow_control_error(final_size: int) -> None:
    """Found by fuzz/quic_connection: a RESET_STREAM's final size was not held to the flow
    control limits (RFC 9000 §4.5), so a final size near 2^62 made the next MAX_DATA
    unencodable and datagrams_to_send() raise VarintError. Now FLOW_CONTROL_ERROR."""
    from fuzz import quic_connection as q
    from quichsd.quic.errors import QuicErrorCode
    from quichsd.sock.sim.frames import ResetStream

    conn = q.server()
    limit = conn.get_transport_param(remote=False)["max_stream_data_bidi_remote"]
    assert final_size > limit
    conn.receive_datagram(q.datagram(2, 0, ResetStream(0, 7, final_size).encode()), q.ADDR, q.T + 1)
    assert conn.state == ConnState.CLOSED
    assert conn.close_info[:2] == (QuicErrorCode.FLOW_CONTROL_ERROR, 0x04)
    conn.datagrams_to_send(q.T + 1)  # the CONNECTION_CLOSE goes out; nothing raises


def test_reset_stream_within_credit_still_resets() -> None:
    from fuzz import quic_connection as q
    from quichsd.sock.sim.frames import ResetStream

    conn = q.server()
    conn.receive_datagram(q.datagram(2, 0, ResetStream(0, 7, 1000).encode()), q.ADDR, q.T + 1)
    assert conn.state == ConnState.ESTABLISHED
    assert conn.datagrams_to_send(q.T + 1)


def test_session_data_round_trips_exactly_and_bounds_its_clock() -> None:
    """Found by fuzz/tls_messages: a received_at near 2^64 ms decoded but could not be encoded
    again (OverflowError), and a decoded time re-encoded could lose a millisecond (int()
    truncation of ms / 1000 * 1000). Now the count is rounded and bounded below 2^51 ms."""
    import dataclasses

    from fuzz.handshakes import _session
    from quichsd.tls.errors import TlsError
    from quichsd.tls.session import SessionData

    base = _session()
    for ms in (1_780_000_000_001, 4_306_019_458_242, (1 << 51) - 1):
        blob = dataclasses.replace(base, received_at=ms / 1000).encode()
        assert SessionData.decode(blob).encode() == blob
    at_zero = dataclasses.replace(base, received_at=0).encode()
    late = at_zero.replace(bytes(8), (1 << 51).to_bytes(8, "big"), 1)
    with pytest.raises(TlsError, match="received_at"):
        SessionData.decode(late)


def test_a_sent_reset_stream_is_not_sent_again_with_its_sentinel() -> None:
    """Found by fuzz/quic_connection: after a STOP_SENDING was answered with RESET_STREAM
    (its code then set to -1, "sent, waiting for the ACK"), the next control frame due on any
    stream made control_frames() yield RESET_STREAM again with code -1, and encoding it
    raised VarintError out of datagrams_to_send()."""
    from fuzz import quic_connection as q
    from quichsd.sock.sim import frames as fr

    conn = q.server()
    # a Handshake packet validates the client's address (RFC 9000 §8.1): no amplification limit
    conn.receive_datagram(q.datagram(1, 0, fr.Ping().encode()), q.ADDR, q.T + 1)
    conn.receive_datagram(q.datagram(2, 0, fr.StopSending(0, 9).encode()), q.ADDR, q.T + 1)
    assert fr.ResetStream(0, 9, 0) in _frames_sent(conn, q.T + 1)
    conn.stream_stop_sending(0, 5)  # another control frame comes due, on the same stream
    again = _frames_sent(conn, q.T + 2)
    assert fr.StopSending(0, 5) in again
    assert not any(isinstance(f, fr.ResetStream) for f in again)


def _frames_sent(conn, now: float) -> list:
    """The frames of the 1-RTT packets fuzz/quic_connection's server sends at `now` (its
    fixed secrets seal both directions)."""
    from fuzz import quic_connection as q
    from quichsd.quic.packet_protection import AES_128_GCM, PacketKey
    from quichsd.quic.versions import QUIC_V1
    from quichsd.sock.sim.frames import parse_frames
    from quichsd.sock.sim.levels import APP
    from quichsd.sock.sim.packets import parse_header, unprotect_packet

    key = PacketKey(AES_128_GCM, q.SECRETS[APP], QUIC_V1)
    frames = []
    for data, _ in conn.datagrams_to_send(now):
        pos = 0
        while pos < len(data):
            header = parse_header(data, pos, len(q.CLIENT_CID))
            if not header.is_long:
                _, _, payload = unprotect_packet(key, data, header, -1)
                frames += [frame for _, frame in parse_frames(payload)]
            pos = header.end
    return frames
