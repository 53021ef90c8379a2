"""`quichsd spec HOST PORT`: a conformance checker for QUIC servers, in the spirit of
h3spec. Each check makes our client break one MUST of RFC 9000 / 9001 / 8446 (through the
simulation's SendRewriter seam, sock/sim/rewrite.py) on a fresh connection, and passes
only when the server closes the connection with exactly the error the RFC names.

checks.py holds the checks (data), mischief.py the rewrites they use, probe.py one
check's connection, runner.py the run and its report, cli.py the subcommand. This module
imports none of them, so the command line can build its parser cheaply.
"""
from __future__ import annotations

__all__ = ["DEFAULT_JOBS", "DEFAULT_TIMEOUT"]

DEFAULT_JOBS = 8  # connections at once: enough to finish fast, few enough not to look like a flood
DEFAULT_TIMEOUT = 3.0  # seconds a check waits for the server's CONNECTION_CLOSE
