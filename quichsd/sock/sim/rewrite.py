"""The seam through which a test client breaks the rules on purpose (`quichsd spec`):
rewrite what our own client stack is about to send, at three places.

- `client_hello`: the ClientHello (its legacy fields, cipher suites, extensions) before the
  engine encodes it and adds it to the transcript (tls/client.py, via
  TlsConfig.client_hello_rewrite), so the rest of the handshake stays consistent with it.
- `transport_parameters`: the local quic_transport_parameters blob on its way from the
  connection to the TLS engine (the caller applies it where it reads the blob).
- `packet`: each packet's frames and header bits just before protection (sender.py,
  `_protect`), so a rewritten packet is still encrypted and authenticated as the peer
  expects: reserved bits are set under header protection (RFC 9000 §17.2, §17.3.1).

Every connection but a spec check's has no rewriter: the cost is one None test per packet.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...tls.messages import ClientHello

__all__ = ["OutgoingPacket", "SendRewriter"]


@dataclass(frozen=True, slots=True)
class OutgoingPacket:
    """One packet about to be protected. `level` in the kernel's numbering (levels.py);
    `header_bits` are ORed into the first byte before protection (0x0c long header, 0x18
    short header: the reserved bits); `pn_length` forces the packet number's length (1-4;
    a packet without frames needs 4 so the header protection sample exists, RFC 9001
    §5.4.2)."""

    level: int
    payload: bytes
    header_bits: int = 0
    pn_length: int | None = None


@dataclass(frozen=True)
class SendRewriter:
    """Optional rewrites; a None field leaves that part as our stack builds it."""

    client_hello: Callable[[ClientHello], ClientHello] | None = None
    transport_parameters: Callable[[bytes], bytes] | None = None
    packet: Callable[[OutgoingPacket], OutgoingPacket] | None = None

    def rewrite_packet(self, level: int, payload: bytes) -> tuple[bytes, int, int | None]:
        """(payload, header bits, packet number length) of the packet to build."""
        if self.packet is None:
            return payload, 0, None
        out = self.packet(OutgoingPacket(level, payload))
        return out.payload, out.header_bits, out.pn_length

    def rewrite_transport_parameters(self, blob: bytes) -> bytes:
        return blob if self.transport_parameters is None else self.transport_parameters(blob)
