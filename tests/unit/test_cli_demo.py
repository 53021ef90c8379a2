"""`quichsd demo` runs the handshakes it describes, in memory and over sockets."""
from __future__ import annotations

import pytest

from quichsd.cli import build_parser, main


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



@pytest.mark.parametrize(("argv", "accepted", "refused"), [
    (["client", "127.0.0.1:4433", "--alpn", "h3"], ["0.5", "1e6"],
     {"0": "expected 0 < seconds <= 1e+06, got 0", "1000001": "expected 0 < seconds <= 1e+06, got 1000001",
      "nan": "expected 0 < seconds <= 1e+06, got nan", "1e6.5": "expected seconds, got '1e6.5'"}),
    (["spec", "localhost", "4433"], ["0.001", "600"],
     {"-1": "expected 0 < seconds <= 600, got -1", "600.5": "expected 0 < seconds <= 600, got 600.5"}),
])
def test_timeout_bounds_of_client_and_spec(argv, accepted, refused, capsys) -> None:
    """One argparse type (cli.seconds_type) for both commands' --timeout, each with its bound."""
    parser = build_parser()
    for text in accepted:
        assert parser.parse_args([*argv, "--timeout", text]).timeout == float(text)
    for text, message in refused.items():
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, f"--timeout={text}"])
        assert message in capsys.readouterr().err
