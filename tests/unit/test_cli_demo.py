"""`quichsd demo` runs the handshakes it describes, in memory and over sockets."""
from __future__ import annotations

from quichsd.cli import main


def test_demo_shows_every_step(capsys) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    sections = out.split("\n\n")
    full, resumed, hybrid = sections[:3]
    assert "key exchange group  X25519\n" in full and "server certificate  CN=localhost" in full
    assert "resumed             yes" in resumed and "0-RTT accepted      yes" in resumed
    assert "key exchange group  X25519MLKEM768" in hybrid
    sockets = "\n\n".join(sections[3:])
    assert "echo: hello over QUIC" in sockets
    assert "resumed=yes 0rtt=yes" in sockets
    assert "echo of 0-RTT data: sent before the handshake finished" in sockets
