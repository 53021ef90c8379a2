"""Access to the published test vectors copied into tests/vectors/."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

VECTORS = Path(__file__).resolve().parent / "vectors"


@cache
def load(name: str) -> dict:
    return json.loads((VECTORS / f"{name}.json").read_text())


def rfc8448(trace: str) -> dict:
    """summary of an RFC 8448 trace: simple_1rtt, resumed_0rtt, hrr, client_auth."""
    return load(f"rfc8448_{trace}")["summary"]
