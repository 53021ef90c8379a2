"""The peer's address and its validation (RFC 9000 §8.1): the anti-amplification budget of a
server not yet sure of its peer, the client's token (QUIC_SOCKOPT_TOKEN's one buffer) and the
server's NEW_TOKEN issuance."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import frames as fr
from .path import PathProbe
from .recovery import MAX_DATAGRAM

__all__ = ["AddressValidation"]


class AddressValidation:
    __slots__ = ("peer_addr", "validated", "bytes_received", "bytes_sent", "token", "token_source",
                 "token_in_flight", "retries_followed", "path")

    def __init__(self, *, is_client: bool, validated: bool, token: bytes, peer_addr: Any,
                 token_source: Callable[[], bytes] | None) -> None:
        self.peer_addr = peer_addr  # the socket's address object, as the endpoint gives it
        self.validated = is_client or validated  # a client's peer needs no validation
        self.bytes_received = 0
        self.bytes_sent = 0
        # Client: set by the application, replaced by a Retry's token, freed at the 1-RTT
        # receive key, then filled by NEW_TOKEN frames, as the kernel's quic_token()
        # (spec §1.4, §2.4).
        self.token = token
        self.token_source = token_source  # server: mints the NEW_TOKEN token
        self.token_in_flight = False  # server: a NEW_TOKEN not acknowledged yet
        self.retries_followed = 0  # client: Retry packets acted on (0 or 1)
        self.path = PathProbe()  # server: a new peer address being validated (§9.3)

    def budget(self) -> int:
        """What may be sent now: three times what was received until validated (§8.1)."""
        if self.validated:
            return MAX_DATAGRAM
        return max(0, min(MAX_DATAGRAM, 3 * self.bytes_received - self.bytes_sent))

    def new_token(self) -> fr.NewToken | None:
        """A NEW_TOKEN frame (§19.7) for the client's next connection; None without a token
        source (a connection made outside an endpoint)."""
        if self.token_source is None:
            return None
        self.token_in_flight = True
        return fr.NewToken(self.token_source())
