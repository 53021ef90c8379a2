"""The transport parameters of one connection as the kernel keeps them (spec §1.3, §1.4, §5):
the local ones (TRANSPORT_PARAM get/set, and what our blob carries), the peer's as set or
received (what TRANSPORT_PARAM remote=1 reports), and the effective peer values the
connection runs on. The codec is tparams.py."""
from __future__ import annotations

import errno
from collections.abc import Mapping
from types import MappingProxyType

from . import tparams
from .errors import sim_error

__all__ = ["TransportParams"]

# Shared by every connection that changes nothing of them (read-only: a connection
# replaces these mappings, never writes into them); a half-open connection has no copies.
_DEFAULT_LOCAL: Mapping[str, int] = MappingProxyType(dict(tparams.LOCAL_DEFAULTS))
_ZERO_PARAMS: Mapping[str, int] = MappingProxyType(dict(tparams.ZERO))
_PEER_DEFAULTS: Mapping[str, int] = MappingProxyType(dict(tparams.PEER_DEFAULTS))


class TransportParams:
    __slots__ = ("local", "remote", "peer", "peer_set", "peer_sent_version_info")

    def __init__(self, local_params: dict[str, int] | None) -> None:
        self.local: Mapping[str, int] = _DEFAULT_LOCAL
        if local_params:
            try:
                self.local = tparams.merge_fields(tparams.LOCAL_DEFAULTS, local_params, remote=False)
            except ValueError as exc:
                raise sim_error(errno.EINVAL, f"local transport parameter {exc}") from None
        self.remote: Mapping[str, int] = _ZERO_PARAMS  # what TRANSPORT_PARAM remote=1 reports
        self.peer: Mapping[str, int] = _PEER_DEFAULTS  # effective peer values
        self.peer_set = False  # the peer's blob was received (TRANSPORT_PARAM_EXT)
        self.peer_sent_version_info = False

    def set(self, fields: dict[str, int], remote: bool) -> None:
        """TRANSPORT_PARAM set: EINVAL for a value the kernel refuses."""
        try:
            merged = tparams.merge_fields(self.remote if remote else self.local, fields, remote)
        except ValueError as exc:
            raise sim_error(errno.EINVAL, f"transport parameter {exc}") from None
        if remote:
            self.remote = merged
            self._apply_peer()
        else:
            self.local = merged

    def accept_peer(self, peer: tparams.PeerParams) -> None:
        """The peer's blob, decoded and checked."""
        self.remote = dict(peer.fields)
        self.peer_set = True
        self.peer_sent_version_info = peer.version_information is not None
        self._apply_peer()

    def _apply_peer(self) -> None:
        peer = {**tparams.PEER_DEFAULTS, **{k: v for k, v in self.remote.items() if v}}
        if not self.remote["disable_compatible_version"] and self.peer_set:
            peer["disable_compatible_version"] = 0
        self.peer = peer

    def idle_timeout(self) -> float:
        """The negotiated idle timeout in seconds, the smaller non-zero of both sides
        (RFC 9000 §10.1); 0.0: none."""
        mine, theirs = self.local["max_idle_timeout"], self.remote["max_idle_timeout"]
        values = [v for v in (mine, theirs if self.peer_set else 0) if v]
        return min(values) / 1e6 if values else 0.0
