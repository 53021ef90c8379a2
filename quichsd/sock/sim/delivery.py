"""What the acknowledgement or loss of a sent packet means for what it carried (RFC 9000
§13.3): CRYPTO and stream ranges are marked acknowledged or sent again, lost control frames
go back in their queue (or are dropped when stale)."""
from __future__ import annotations

from collections.abc import Iterable

from . import frames as fr
from .address import AddressValidation
from .cids import ConnectionIds
from .crypto_stream import CryptoStreams
from .keys import LevelKeys
from .recovery import CryptoRange, SentPacket, StreamRange
from .streams import StreamManager

__all__ = ["Delivery"]


class Delivery:
    __slots__ = ("keys", "crypto", "streams", "pending", "cids", "address")

    def __init__(self, keys: LevelKeys, crypto: CryptoStreams, streams: StreamManager,
                 pending: list[fr.Frame], cids: ConnectionIds, address: AddressValidation) -> None:
        self.keys = keys
        self.crypto = crypto
        self.streams = streams
        self.pending = pending  # the connection's control frames for 1-RTT packets
        self.cids = cids
        self.address = address

    def on_acked(self, packets: Iterable[SentPacket]) -> None:
        for packet in packets:
            for item in packet.items:
                if isinstance(item, CryptoRange):
                    if item.level not in self.keys.discarded:
                        self.crypto[item.level].send.on_acked(item.start, item.end, False)
                elif isinstance(item, StreamRange):
                    self.streams.on_stream_acked(item.stream_id, item.start, item.end, item.fin)
                else:
                    if isinstance(item, fr.NewToken):
                        self.address.token_in_flight = False  # another one may go (spec §1.4)
                    self.streams.on_control_acked(item)

    def on_lost(self, packets: Iterable[SentPacket]) -> None:
        for packet in packets:
            for item in packet.items:
                if isinstance(item, CryptoRange):
                    if item.level not in self.keys.discarded:
                        self.crypto[item.level].send.on_lost(item.start, item.end, False)
                elif isinstance(item, StreamRange):
                    self.streams.on_stream_lost(item.stream_id, item.start, item.end, item.fin)
                else:
                    self._requeue(item)

    def _requeue(self, frame: fr.Frame) -> None:
        if isinstance(frame, (fr.HandshakeDone, fr.NewToken, fr.RetireConnectionId)):
            self.pending.append(frame)
        elif isinstance(frame, fr.NewConnectionId):
            if frame.sequence in self.cids.local:
                self.pending.append(frame)
        elif not isinstance(frame, (fr.PathResponse, fr.Ping)):
            self.streams.requeue(frame)
