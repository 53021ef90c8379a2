"""The QUIC version a connection speaks and its compatible version negotiation (RFC 9368):
the version in use, the one this side prefers, and whether a client followed the server to
another compatible version."""
from __future__ import annotations

import errno

from ...quic.errors import QuicError, QuicErrorCode
from ...quic.transport_params import VersionInformation
from ...quic.versions import SUPPORTED_VERSIONS, QuicVersion
from . import tparams
from .errors import sim_error

__all__ = ["VersionChoice"]


class VersionChoice:
    __slots__ = ("version", "qv", "preferred", "followed")

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
            if vi.available_versions:
                tparams.select_version(vi.available_versions, is_server=False, current=self.version,
                                       preferred=self.preferred)
            return None
        chosen = tparams.select_version(vi.available_versions, is_server=True, current=self.version,
                                        preferred=self.preferred)
        return chosen if chosen != self.version else None

    @property
    def may_switch(self) -> bool:
        """A server that may still move to its preferred version."""
        return self.preferred not in (0, self.version)
