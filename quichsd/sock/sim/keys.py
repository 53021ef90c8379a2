"""The packet protection keys of one connection (RFC 9001 §4, §5): per encryption level and
direction, the packets parked until their level's receive key arrives (spec §2.1, §2.4),
and the 1-RTT key phase (RFC 9001 §6).

A key is installed as its secret; its AEAD and header-protection contexts are derived at
first use or in idle time (PacketKey.derive), so an install costs the datagrams about to
leave nothing."""
from __future__ import annotations

import errno
from typing import Any

from ...kernel_numbers import QuicEvent
from ...quic.packet_protection import CIPHERS, PacketKey, UnprotectError
from ...quic.versions import QuicVersion
from .errors import sim_error
from .levels import APP, EARLY, HANDSHAKE, INITIAL
from .notifications import Notifications
from .packets import PacketHeader, unprotect_packet

__all__ = ["LevelKeys", "KeyPhase", "MAX_PARKED_PACKETS"]

MAX_PARKED_PACKETS = 64  # packets parked per level while their keys are missing
ParkedPacket = tuple[bytes, float, Any, int]


class LevelKeys:
    __slots__ = ("send", "recv", "cipher", "discarded", "alt_initial_recv", "parked")

    def __init__(self) -> None:
        self.send: dict[int, PacketKey] = {}
        self.recv: dict[int, PacketKey] = {}
        self.cipher: dict[int, int] = {}  # the cipher type installed per level
        self.discarded: set[int] = set()
        # Initial receive keys of a version the connection moved away from (RFC 9368 §2.3):
        # the peer's packets of the old version may still arrive.
        self.alt_initial_recv: dict[int, PacketKey] = {}
        # (packet, arrival time, the datagram's source address and size): a replayed packet
        # is judged on its own path, as the kernel replays each buffered skb with its address.
        self.parked: dict[int, list[ParkedPacket]] = {HANDSHAKE: [], EARLY: [], APP: []}

    def install_initial(self, client: PacketKey, server: PacketKey, is_client: bool) -> None:
        self.send[INITIAL], self.recv[INITIAL] = (client, server) if is_client else (server, client)

    def new_key(self, level: int, cipher_type: int, secret: bytes, qv: QuicVersion) -> PacketKey:
        """A key for CRYPTO_SECRET (spec §1.4): EINVAL for a level, cipher or secret the
        kernel refuses. Both directions of a level use the cipher installed first."""
        if level not in (APP, HANDSHAKE, EARLY):
            raise sim_error(errno.EINVAL, f"CRYPTO_SECRET at level {level}")
        ctype = self.cipher.get(level, cipher_type)
        cipher = CIPHERS.get(ctype)
        if cipher is None:
            raise sim_error(errno.EINVAL, f"cipher type {cipher_type}")
        if len(secret) < cipher.secret_len:
            raise sim_error(errno.EINVAL, f"{cipher.name} needs a {cipher.secret_len}-byte secret")
        key = PacketKey(cipher, bytes(secret[:cipher.secret_len]), qv)
        self.cipher[level] = ctype
        return key

    def discard(self, level: int) -> bool:
        """Drop a level's keys and parked packets for good; False if done before."""
        if level in self.discarded:
            return False
        self.discarded.add(level)
        self.send.pop(level, None)
        self.recv.pop(level, None)
        if level == INITIAL:
            self.alt_initial_recv.clear()
        self.parked.pop(level, None)
        return True

    def park(self, level: int, packet: bytes, now: float, source: Any, size: int) -> None:
        parked = self.parked.get(level)
        if parked is not None and len(parked) < MAX_PARKED_PACKETS:
            parked.append((packet, now, source, size))

    def take_parked(self, level: int) -> list[ParkedPacket]:
        parked = self.parked.get(level)
        if not parked:
            return []
        self.parked[level] = []
        return parked

    @property
    def app_readable(self) -> bool:
        """1-RTT data may be read: the 1-RTT receive key is (or was) in. 0-RTT data waits on
        the "early list" until then (spec §2.6)."""
        return APP in self.recv or APP in self.discarded

    def derive_all(self) -> None:
        for keys in (self.send, self.recv):
            for key in keys.values():
                key.derive()

    def forget_derived(self) -> None:
        for keys in (self.send, self.recv):
            for key in keys.values():
                key.forget_derived()


class KeyPhase:
    """1-RTT key updates (RFC 9001 §6): the key phase bit each way, the receive keys of the
    previous and next phase, and where our current phase began. An update the peer
    started is told to the socket as the kernel does (packet.c: QUIC_EVENT_KEY_UPDATE,
    payload the new phase, only for the peer's updates, not for ours)."""

    __slots__ = ("keys", "send_phase", "recv_phase", "first_pn", "prev_recv", "next_recv", "notifications")

    def __init__(self, keys: LevelKeys, notifications: Notifications | None = None) -> None:
        self.keys = keys
        self.notifications = notifications
        self.send_phase = False
        self.recv_phase = False
        self.first_pn: int | None = None  # first 1-RTT packet number of our phase; None: no update yet
        self.prev_recv: PacketKey | None = None
        self.next_recv: PacketKey | None = None

    def start_update(self, next_pn: int) -> None:
        """Our side moves to the next phase; `next_pn`: the next 1-RTT packet number."""
        self.keys.send[APP] = self.keys.send[APP].next_phase()
        self.send_phase = not self.send_phase
        self.first_pn = next_pn

    def update_pending(self, largest_acked: int | None) -> bool:
        """§6.1: the peer has not answered the last update yet, or no packet of the current
        phase was acknowledged: only a subsequent update waits for that ACK, the first one
        (no 1-RTT packet of ours need have been sent yet) does not."""
        if self.send_phase != self.recv_phase:
            return True
        first = self.first_pn
        if first is None:
            return False
        return largest_acked is None or largest_acked < first

    def unprotect(self, key: PacketKey, data: bytes, header: PacketHeader, largest: int,
                  next_pn: int) -> tuple[int, int, bytes]:
        """Open a 1-RTT packet with the key of its phase: the current one, the previous one
        (a late packet), or the next one (the peer's update, which rolls our receive keys,
        and our send keys too if the peer started it)."""
        try:
            first, pn, payload = unprotect_packet(key, data, header, largest)
            if bool(first & 0x04) == self.recv_phase:
                return first, pn, payload
        except UnprotectError:
            pass
        if self.prev_recv is not None:
            try:
                first, pn, payload = unprotect_packet(self.prev_recv, data, header, largest)
                if bool(first & 0x04) != self.recv_phase:
                    return first, pn, payload
            except UnprotectError:
                pass
        following = self.next_recv
        if following is None:
            following = self.next_recv = key.next_phase()
        first, pn, payload = unprotect_packet(following, data, header, largest)
        if bool(first & 0x04) == self.recv_phase:
            raise UnprotectError("key phase did not change")
        self._roll(key, following, next_pn)
        return first, pn, payload

    def _roll(self, old: PacketKey, new: PacketKey, next_pn: int) -> None:
        keys = self.keys
        self.prev_recv, keys.recv[APP] = old, new
        self.next_recv = None
        self.recv_phase = not self.recv_phase
        if self.recv_phase != self.send_phase and APP in keys.send:
            keys.send[APP] = keys.send[APP].next_phase()
            self.send_phase = self.recv_phase
            self.first_pn = next_pn
            if self.notifications is not None:
                self.notifications.push(QuicEvent.KEY_UPDATE, bytes((self.recv_phase,)))
