"""The connection's state as the kernel's socket reports it (spec §1.5): ESTABLISHING until
both 1-RTT keys are installed, ESTABLISHED then, CLOSED after a close, an idle timeout, a
stateless reset or the peer's CONNECTION_CLOSE."""
from __future__ import annotations

from enum import Enum

__all__ = ["ConnState"]


class ConnState(Enum):
    ESTABLISHING = "ESTABLISHING"
    ESTABLISHED = "ESTABLISHED"
    CLOSED = "CLOSED"
