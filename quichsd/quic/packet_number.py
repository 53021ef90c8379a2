"""Packet number truncation and recovery (RFC 9000 §17.1, Appendix A.2 and A.3)."""
from __future__ import annotations

__all__ = ["MAX_PACKET_NUMBER", "decode_packet_number", "encode_packet_number"]

MAX_PACKET_NUMBER = (1 << 62) - 1


def encode_packet_number(full_pn: int, largest_acked: int | None) -> bytes:
    """The shortest truncated form (1-4 bytes) that lets the peer recover `full_pn`.

    The encoding must cover at least twice the packets in flight, i.e. one bit more than
    log2 of their number (App. A.2). `largest_acked` is None before any ACK arrived.
    """
    in_flight = full_pn - (-1 if largest_acked is None else largest_acked)
    if in_flight < 1:
        raise ValueError(f"packet number {full_pn} not above largest acked {largest_acked}")
    bits = (in_flight - 1).bit_length() + 1
    length = (bits + 7) // 8
    if length > 4:
        raise ValueError(f"{in_flight} packets in flight need {bits} bits")
    return (full_pn & ((1 << (8 * length)) - 1)).to_bytes(length, "big")


def decode_packet_number(largest_pn: int, truncated_pn: int, pn_nbits: int) -> int:
    """The packet number closest to largest_pn + 1 whose low `pn_nbits` are `truncated_pn`
    (App. A.3). Use largest_pn = -1 when nothing was received in this space yet."""
    expected = largest_pn + 1
    window = 1 << pn_nbits
    half = window >> 1
    candidate = (expected & ~(window - 1)) | truncated_pn
    if candidate <= expected - half and candidate < (1 << 62) - window:
        return candidate + window
    if candidate > expected + half and candidate >= window:
        return candidate - window
    return candidate
