"""Encryption levels in the kernel's numbering (APP=0, INITIAL=1, HANDSHAKE=2, EARLY=3) and
how they map to packet number spaces and long header packet types."""
from __future__ import annotations

from ...kernel_numbers import CryptoLevel
from ...quic.versions import LongPacketType

__all__ = ["APP", "INITIAL", "HANDSHAKE", "EARLY", "SPACE_OF", "PACKET_KIND", "LONG_TYPE", "LEVEL_OF_TYPE"]

APP, INITIAL, HANDSHAKE, EARLY = (int(CryptoLevel.APP), int(CryptoLevel.INITIAL),
                                  int(CryptoLevel.HANDSHAKE), int(CryptoLevel.EARLY))
# 0-RTT and 1-RTT share the application packet number space (RFC 9000 §12.3).
SPACE_OF = {INITIAL: INITIAL, HANDSHAKE: HANDSHAKE, APP: APP, EARLY: APP}
PACKET_KIND = {INITIAL: "initial", HANDSHAKE: "handshake", EARLY: "0rtt", APP: "1rtt"}
LONG_TYPE = {INITIAL: LongPacketType.INITIAL, HANDSHAKE: LongPacketType.HANDSHAKE,
             EARLY: LongPacketType.ZERO_RTT}
LEVEL_OF_TYPE = {v: k for k, v in LONG_TYPE.items()}
