"""The one error type the simulated socket raises: an OSError with the kernel's errno."""
from __future__ import annotations

import errno as _errno
import os

__all__ = ["SimError", "sim_error"]


class SimError(OSError):
    """Raised with the errno the kernel would return (EINVAL, EPIPE, EMSGSIZE, EAGAIN, ...)."""


def sim_error(code: int, what: str) -> SimError:
    name = _errno.errorcode.get(code, str(code))
    return SimError(code, f"{what} ({name}: {os.strerror(code)})")
