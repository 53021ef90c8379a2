"""The steps of connection migration that span a connection's parts (path.py has the path
state and what the kernel does, RFC 9000 §8.2, §9): who starts validating a path, what a
PATH_CHALLENGE or PATH_RESPONSE does, the PATH timer, and the preferred address (§9.6)
in the transport parameters. `view` is the Receiver or Sender (lifecycle.LifecycleView)."""
from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from ...kernel_numbers import QuicEvent
from ...quic.transport_params import PreferredAddress
from . import frames as fr
from .path import Route, local_of, path_timeout, peer_of
from .recovery import K_GRANULARITY

if TYPE_CHECKING:
    from .lifecycle import LifecycleView
    from .notifications import Notifications

__all__ = ["on_new_path", "start_own_path", "on_new_cid", "on_challenge", "on_response", "on_timer",
           "encode_preferred", "decode_preferred", "start_preferred", "Route", "peer_of"]


def _timeout(view: LifecycleView) -> float:
    """max(2 PTO, 1.5 s) with the PTO without backoff (the kernel's cong->pto)."""
    r = view.recovery
    pto = r.smoothed_rtt + max(4 * r.rttvar, K_GRANULARITY) + view.params.peer["max_ack_delay"] / 1e6
    return path_timeout(pto)


def on_new_path(view: LifecycleView, path: Any, dcid: bytes, size: int, now: float) -> None:
    """Server: the highest-numbered 1-RTT packet so far came on another path (§9.3). Probe
    it, to the peer's next CID unless it kept using our CID in use (a NAT rebinding, §9.5);
    with no CID to spare, retire the oldest so the peer sends another (packet.c
    quic_packet_path_alt_detect) and probe at its next packet."""
    probe = view.address.path
    if not probe.on_packet(path, size):
        return
    cids = view.cids
    seq = cids.local_seq(dcid)
    if not cids.select_alt(seq == cids.local_active_seq):
        view.pending.append(cids.retire_oldest())
        return
    probe.start(path, now, _timeout(view), received=size)
    probe.new_local_seq = seq


def start_own_path(view: LifecycleView, path: Any, now: float) -> None:
    """Active migration or the move to a preferred address: validate `path` with the
    peer's next CID, or, if it gave us none to spare, ask for one first (outqueue.c
    quic_outq_probe_path_alt: QUIC_PATH_ALT_PENDING until NEW_CONNECTION_ID)."""
    probe, cids = view.address.path, view.cids
    if not cids.select_alt(False):
        view.pending.append(cids.retire_oldest())
        probe.waiting_for_cid = path
        return
    probe.start(path, now, _timeout(view))
    probe.new_local_seq = None


def on_new_cid(view: LifecycleView, now: float) -> None:
    """A NEW_CONNECTION_ID arrived: a path waiting for a CID can be probed now."""
    path = view.address.path.waiting_for_cid
    if path is not None:
        view.address.path.waiting_for_cid = None
        start_own_path(view, path, now)


def on_challenge(view: LifecycleView, data: bytes, source: Any) -> None:
    """PATH_RESPONSE on the path the challenge came on (§8.2.2)."""
    if source == view.address.peer_addr:
        view.pending.append(fr.PathResponse(data))
    else:
        view.address.path.responses.append((data, source))


def on_response(view: LifecycleView, data: bytes, notifications: Notifications) -> None:
    """A PATH_RESPONSE that answers our challenge moves the connection to the path (§9.3,
    §9.4), to its CID (§9.5), and tells the application whether our own address changed
    (frame.c quic_frame_path_response_process)."""
    address = view.address
    probe = address.path
    local_seq = probe.new_local_seq
    moved = probe.on_response(data)
    if moved is None:
        return
    old, address.peer_addr = address.peer_addr, moved
    view.cids.switch_to_alt(local_seq)
    if local_of(moved) == probe.preferred_local:
        probe.preferred_local = None  # server: the client moved to our preferred address
    local = local_of(moved) != local_of(old)
    notifications.push(QuicEvent.CONNECTION_MIGRATION, bytes((local,)))


def on_timer(view: LifecycleView, now: float) -> None:
    """The PATH timer: resend the challenge or give the path up (timer.c)."""
    if view.address.path.on_timer(now, _timeout(view)) is not None:
        view.cids.alt_seq = None


def start_preferred(view: LifecycleView, now: float) -> None:
    """Client, at HANDSHAKE_DONE: move to the server's preferred address if it gave one
    (frame.c quic_frame_handshake_done_process), from the same local socket."""
    probe = view.address.path
    if probe.preferred is not None and probe.alt_addr is None and probe.waiting_for_cid is None:
        target, probe.preferred = probe.preferred, None
        start_own_path(view, target, now)


# ---- the transport parameter (§18.2) -------------------------------------------------------

_ANY4, _ANY6 = ipaddress.IPv4Address(0), ipaddress.IPv6Address(0)


def encode_preferred(addr: tuple[Any, ...], cid: bytes, token: bytes) -> PreferredAddress:
    """Our preferred address in its family's half, the other half zero (family.c
    quic_v4/v6_set_pref_addr)."""
    ip = ipaddress.ip_address(addr[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return PreferredAddress(ip, addr[1], _ANY6, 0, cid, token)
    return PreferredAddress(_ANY4, 0, ip, addr[1], cid, token)


def decode_preferred(pa: PreferredAddress, family: int) -> tuple[Any, ...] | None:
    """The address a client of `family` would move to (family.c quic_v4/v6_get_pref_addr:
    an IPv6 socket takes the IPv6 half, else the IPv4 one, mapped; an IPv4 socket only
    the IPv4 half); None if unusable (no port, unspecified or multicast)."""
    if family == socket.AF_INET6:
        v6 = pa.ipv6_address
        if pa.ipv6_port and not (v6.is_unspecified or v6.is_multicast):
            return (str(v6), pa.ipv6_port, 0, 0)
    v4 = pa.ipv4_address
    if not pa.ipv4_port or v4.is_unspecified or v4.is_multicast:
        return None
    if family == socket.AF_INET6:
        return (f"::ffff:{v4}", pa.ipv4_port, 0, 0)
    return (str(v4), pa.ipv4_port)
