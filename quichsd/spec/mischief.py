"""The rule-breaking a check asks of our client, as SendRewriters (sock/sim/rewrite.py):
edits of the transport parameter blob, of the ClientHello, and of one packet at a level.

A check's rewriter is made fresh for each connection from a `PeerView`: what the
connection has learnt of the server so far (its transport parameters), read when the
packet is built, so an edit can aim just past a server's limit.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..quic.transport_params import TransportParameters
from ..quic.varint import decode_varint, encode_varint
from ..sock.sim.levels import APP, HANDSHAKE, INITIAL
from ..sock.sim.rewrite import OutgoingPacket, SendRewriter
from ..tls import extensions as ext
from ..tls.constants import ExtensionType
from ..tls.messages import ClientHello

__all__ = [
    "APP",
    "HANDSHAKE",
    "INITIAL",
    "PeerView",
    "RewriterFactory",
    "hello_edit",
    "packet_edit",
    "tp_edit",
    "tp_varint",
    "tp_without",
]


@dataclass
class PeerView:
    """What one connection has learnt of the server: its transport parameters (None until
    its first flight), and whether the handshake is confirmed (HANDSHAKE_DONE received)."""

    params: TransportParameters | None = None
    handshake_confirmed: bool = False

    def param(self, name: str, default: int = 0) -> int:
        value = getattr(self.params, name, None) if self.params is not None else None
        return default if value is None else int(value)


RewriterFactory = Callable[[PeerView], SendRewriter]


# ---- transport parameters (RFC 9000 §18) -----------------------------------------------------


def _tp_items(blob: bytes) -> list[tuple[int, bytes]]:
    items, pos = [], 0
    while pos < len(blob):
        pid, pos = decode_varint(blob, pos)
        length, pos = decode_varint(blob, pos)
        items.append((pid, blob[pos:pos + length]))
        pos += length
    return items


def _tp_encode(items: list[tuple[int, bytes]]) -> bytes:
    return b"".join(encode_varint(pid) + encode_varint(len(value)) + value for pid, value in items)


def tp_edit(drop: tuple[int, ...] = (), add: tuple[tuple[int, bytes], ...] = ()) -> RewriterFactory:
    """Our parameters without the ids in `drop` and with `add` (replacing those ids)."""
    replaced = set(drop) | {pid for pid, _ in add}

    def edit(blob: bytes) -> bytes:
        return _tp_encode([item for item in _tp_items(blob) if item[0] not in replaced] + list(add))

    return lambda peer: SendRewriter(transport_parameters=edit)


def tp_without(pid: int) -> RewriterFactory:
    return tp_edit(drop=(pid,))


def tp_varint(pid: int, value: int) -> RewriterFactory:
    return tp_edit(add=((pid, encode_varint(value)),))


# ---- the ClientHello (RFC 8446 §4.1.2, §4.2) -----------------------------------------------


def hello_edit(edit: Callable[[ClientHello], ClientHello]) -> RewriterFactory:
    return lambda peer: SendRewriter(client_hello=edit)


def without_extension(ext_type: int) -> Callable[[ClientHello], ClientHello]:
    def edit(hello: ClientHello) -> ClientHello:
        return replace(hello, extensions={k: v for k, v in hello.extensions.items() if k != ext_type})
    return edit


def with_alpn(*protocols: bytes) -> Callable[[ClientHello], ClientHello]:
    def edit(hello: ClientHello) -> ClientHello:
        return replace(hello, extensions={**hello.extensions, ExtensionType.ALPN: ext.encode_alpn(protocols)})
    return edit


def fake_psk_extension() -> bytes:
    """An offered PSK no server knows, with a zero binder of SHA-256's size."""
    return ext.encode_offered_psks([ext.PskIdentity(b"quichsd-spec-unknown-psk", 0)], [bytes(32)])


def with_psk(first: bool, keep_modes: bool = True) -> Callable[[ClientHello], ClientHello]:
    """pre_shared_key first (where it must not be, RFC 8446 §4.2.11) or last, with or
    without psk_key_exchange_modes."""
    def edit(hello: ClientHello) -> ClientHello:
        exts = {k: v for k, v in hello.extensions.items()
                if keep_modes or k != ExtensionType.PSK_KEY_EXCHANGE_MODES}
        psk = {ExtensionType.PRE_SHARED_KEY: fake_psk_extension()}
        return replace(hello, extensions=(psk | exts) if first else (exts | psk))
    return edit


# ---- one packet ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PacketEdit:
    """Edits every packet our client sends at `level`: the server must close at the first
    one, and a later one (a retransmission, the Initial after a Retry) breaks the rule as
    well. 1-RTT packets only once the handshake is confirmed: the server has then completed
    and installed its keys, so what it answers is about the frame, not about a packet that
    arrived ahead of its keys."""

    level: int
    peer: PeerView
    frames: Callable[[PeerView], bytes] | None
    mode: str  # "append", "prepend" or "replace"
    header_bits: int
    pn_length: int | None

    def __call__(self, packet: OutgoingPacket) -> OutgoingPacket:
        if packet.level != self.level or (packet.level == APP and not self.peer.handshake_confirmed):
            return packet
        extra = self.frames(self.peer) if self.frames is not None else b""
        if self.mode == "replace":
            payload = extra
        elif self.mode == "prepend":
            payload = extra + packet.payload
        else:
            payload = packet.payload + extra
        return OutgoingPacket(packet.level, payload, self.header_bits, self.pn_length)


def packet_edit(level: int, frames: bytes | Callable[[PeerView], bytes] | None = None, *,
                mode: str = "append",
                header_bits: int = 0, pn_length: int | None = None) -> RewriterFactory:
    """Frames added to (or replacing the frames of) our packets at `level`, and header bits
    set in them. `frames` may depend on the server's parameters."""
    build = (lambda peer: frames) if isinstance(frames, bytes) else frames

    def factory(peer: PeerView) -> SendRewriter:
        return SendRewriter(packet=_PacketEdit(level, peer, build, mode, header_bits, pn_length))

    return factory
