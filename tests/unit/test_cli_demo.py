"""`quichsd demo` runs the three handshakes it describes."""
from __future__ import annotations

from quichsd.cli import main


def test_demo_shows_full_resumed_and_hybrid_handshakes(capsys) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    full, resumed, hybrid = out.strip().split("\n\n")
    assert "key exchange group  X25519\n" in full and "server certificate  CN=localhost" in full
    assert "resumed             yes" in resumed and "0-RTT accepted      yes" in resumed
    assert "key exchange group  X25519MLKEM768" in hybrid
