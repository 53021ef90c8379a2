"""The QUIC version a connection speaks and its version negotiation (RFC 9368): the version
in use, the one this side prefers, whether a client followed the server to another
compatible version, and a client's answer to a Version Negotiation packet (incompatible
version negotiation, RFC 9000 §6.2, RFC 9368 §2.1) with its downgrade check (§4)."""
from __future__ import annotations

import errno

from ...quic.errors import QuicError, QuicErrorCode
from ...quic.transport_params import VersionInformation
from ...quic.versions import QUIC_V1, QUIC_V2, SUPPORTED_VERSIONS, QuicVersion
from . import tparams
from .errors import sim_error

__all__ = ["VersionChoice", "describe_versions"]


def describe_versions(versions: tuple[int, ...]) -> str:
    """"v2,v1,0x1a2a3a4a": versions as an error message names them."""
    names = {QUIC_V1.number: "v1", QUIC_V2.number: "v2"}
    return ",".join(names.get(v, f"0x{v:08x}") for v in versions)


class VersionChoice:
    __slots__ = ("version", "qv", "preferred", "followed", "negotiated_from")

    def __init__(self, version: int, *, configured: int, is_client: bool) -> None:
        if version not in SUPPORTED_VERSIONS:
            raise sim_error(errno.EINVAL, f"unsupported QUIC version 0x{version:08x}")
        self.version = version
        self.qv: QuicVersion = SUPPORTED_VERSIONS[version]
        # A client keeps its configured version; a server prefers its own if configured,
        # else stays on the client's chosen one (0: no preference), as the kernel's
        # quic_packet_select_version (seen under QEMU: an unconfigured kernel listener
        # keeps a v2 client in v2).
        self.preferred = configured or (version if is_client else 0)
        self.followed = False  # client: moved to the server's compatible version
        # client: the versions of the Version Negotiation it restarted after (RFC 9368 §4)
        self.negotiated_from: tuple[int, ...] | None = None

    def switch(self, version: int) -> None:
        self.version = version
        self.qv = SUPPORTED_VERSIONS[version]

    def negotiate(self, vi: VersionInformation | None, *, is_client: bool) -> int | None:
        """The version to move to after the peer's version_information (RFC 9368 §4), or
        None to stay; QuicError VERSION_NEGOTIATION_ERROR if the peer's choice is wrong."""
        if vi is None:
            return None
        if is_client:
            if vi.chosen_version != self.version:
                raise QuicError(QuicErrorCode.VERSION_NEGOTIATION_ERROR,
                                "server's chosen version is not in use")
            if self.negotiated_from is not None and self.choose_from(vi.available_versions) != self.version:
                # RFC 9368 §4: the server's list must lead to the version the Version
                # Negotiation did (else it was forged to downgrade us); empty fails too.
                raise QuicError(QuicErrorCode.VERSION_NEGOTIATION_ERROR,
                                "server's versions contradict its Version Negotiation")
            if vi.available_versions:
                tparams.select_version(vi.available_versions, is_server=False, current=self.version,
                                       preferred=self.preferred)
            return None
        chosen = tparams.select_version(vi.available_versions, is_server=True, current=self.version,
                                        preferred=self.preferred)
        return chosen if chosen != self.version else None

    @staticmethod
    def choose_from(offered: tuple[int, ...]) -> int | None:
        """Our first version (in our preference order) among `offered`, None if none."""
        return next((v for v in tparams.AVAILABLE_VERSIONS if v in offered), None)

    def answer_negotiation(self, offered: tuple[int, ...]) -> int | None:
        """A client's reading of a Version Negotiation packet's versions: None to ignore it
        (it lists the version we offered, RFC 9000 §6.2), else the version to restart with;
        QuicError VERSION_NEGOTIATION_ERROR naming both lists when we have none in common."""
        if self.version in offered:
            return None
        chosen = self.choose_from(offered)
        if chosen is None:
            raise QuicError(QuicErrorCode.VERSION_NEGOTIATION_ERROR,
                            f"no common QUIC version: server {describe_versions(offered)}, "
                            f"we {describe_versions(tparams.AVAILABLE_VERSIONS)}")
        return chosen

    def restart(self, version: int, offered: tuple[int, ...]) -> None:
        """The client starts over in `version` after a Version Negotiation listing `offered`."""
        self.switch(version)
        self.preferred = version
        self.negotiated_from = offered

    @property
    def may_switch(self) -> bool:
        """A server that may still move to its preferred version."""
        return self.preferred not in (0, self.version)
