"""Target quic_frames: one packet payload through the frame decoder (RFC 9000 §12.4, §19;
RFC 9221 §4), quichsd/sock/sim/frames.py, and the per-packet-type frame rules (Table 3).

Input: a decrypted packet payload.

A bug is: any exception but QuicError; a QuicError other than FRAME_ENCODING_ERROR (or
PROTOCOL_VIOLATION for an empty payload and for a frame the packet type does not allow);
frames that parse but whose own encodings do not parse back to the same frames (PADDING
runs merged: a frame type may come in a longer varint than needed, which RFC 9000 §12.4
lets a receiver accept, and "40 00" then splits a run of PADDING in two).
"""
from __future__ import annotations

from quichsd.quic.errors import QuicError, QuicErrorCode
from quichsd.sock.sim.frames import Frame, Padding, check_allowed, parse_frames

_KINDS = ("initial", "handshake", "0rtt", "1rtt")


def _merged(frames: list[Frame]) -> list[Frame]:
    out: list[Frame] = []
    for frame in frames:
        if out and isinstance(frame, Padding) and isinstance(out[-1], Padding):
            out[-1] = Padding(out[-1].length + frame.length)
        else:
            out.append(frame)
    return out


def one_input(data: bytes) -> None:
    try:
        frames = parse_frames(data)
    except QuicError as err:
        expected = QuicErrorCode.PROTOCOL_VIOLATION if not data else QuicErrorCode.FRAME_ENCODING_ERROR
        assert err.error_code == expected, err
        return
    assert frames, "a non-empty payload without frames"
    encoded = b"".join(frame.encode() for _, frame in frames)
    again = [frame for _, frame in parse_frames(encoded)]
    assert again == _merged([frame for _, frame in frames]), f"round trip:\n{frames}\n{again}"
    for kind in _KINDS:
        for ftype, _ in frames:
            try:
                check_allowed(ftype, kind)
            except QuicError as err:
                assert err.error_code == QuicErrorCode.PROTOCOL_VIOLATION and kind != "1rtt", err
