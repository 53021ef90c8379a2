"""What differs between QUIC v1 (RFC 9001) and v2 (RFC 9369): salts, labels, Retry keys,
long header type bits. Everything else in packet protection is shared."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

__all__ = [
    "QUIC_V1",
    "QUIC_V2",
    "SUPPORTED_VERSIONS",
    "LongPacketType",
    "QuicVersion",
    "get_version",
]


class LongPacketType(Enum):
    INITIAL = "Initial"
    ZERO_RTT = "0-RTT"
    HANDSHAKE = "Handshake"
    RETRY = "Retry"


@dataclass(frozen=True, eq=False)  # singletons: identity is equality
class QuicVersion:
    number: int
    initial_salt: bytes
    # HKDF-Expand-Label labels for packet protection keys and key update.
    key_label: bytes
    iv_label: bytes
    hp_label: bytes
    ku_label: bytes
    # AEAD_AES_128_GCM key and nonce of the Retry integrity tag.
    retry_key: bytes
    retry_nonce: bytes
    # Long header Packet Type field (bits 0x30 of the first byte), per type.
    type_bits: Mapping[LongPacketType, int]
    _bits_to_type: Mapping[int, LongPacketType] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reverse = MappingProxyType({bits: t for t, bits in self.type_bits.items()})
        object.__setattr__(self, "_bits_to_type", reverse)

    def long_type_bits(self, packet_type: LongPacketType) -> int:
        return self.type_bits[packet_type]

    def long_packet_type(self, first_byte: int) -> LongPacketType:
        """Type of a long header packet of this version from its first byte."""
        return self._bits_to_type[(first_byte >> 4) & 0x03]


def _types(initial: int, zero_rtt: int, handshake: int, retry: int) -> Mapping[LongPacketType, int]:
    return MappingProxyType(
        {
            LongPacketType.INITIAL: initial,
            LongPacketType.ZERO_RTT: zero_rtt,
            LongPacketType.HANDSHAKE: handshake,
            LongPacketType.RETRY: retry,
        }
    )


# RFC 9001 §5.2, §5.1, §5.8; RFC 9000 §17.2 Table 5.
QUIC_V1 = QuicVersion(
    number=0x00000001,
    initial_salt=bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    key_label=b"quic key",
    iv_label=b"quic iv",
    hp_label=b"quic hp",
    ku_label=b"quic ku",
    retry_key=bytes.fromhex("be0c690b9f66575a1d766b54e368c84e"),
    retry_nonce=bytes.fromhex("461599d35d632bf2239825bb"),
    type_bits=_types(initial=0b00, zero_rtt=0b01, handshake=0b10, retry=0b11),
)

# RFC 9369 §3.3.1 (salt), §3.3.2 (labels), §3.3.3 (Retry), §3.2 (type bits rotated by one).
QUIC_V2 = QuicVersion(
    number=0x6B3343CF,
    initial_salt=bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
    key_label=b"quicv2 key",
    iv_label=b"quicv2 iv",
    hp_label=b"quicv2 hp",
    ku_label=b"quicv2 ku",
    retry_key=bytes.fromhex("8fb4b01b56ac48e260fbcbcead7ccc92"),
    retry_nonce=bytes.fromhex("d86969bc2d7c6d9990efb04a"),
    type_bits=_types(initial=0b01, zero_rtt=0b10, handshake=0b11, retry=0b00),
)

SUPPORTED_VERSIONS: Mapping[int, QuicVersion] = MappingProxyType(
    {QUIC_V1.number: QUIC_V1, QUIC_V2.number: QUIC_V2}
)


def get_version(number: int) -> QuicVersion:
    """The descriptor of a supported version; KeyError names the unsupported one."""
    try:
        return SUPPORTED_VERSIONS[number]
    except KeyError:
        raise KeyError(f"unsupported QUIC version 0x{number:08x}") from None
