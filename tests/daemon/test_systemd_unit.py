"""The shipped systemd unit asks for what the daemon provides."""
from __future__ import annotations

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "quichsd.service"


def test_unit_is_type_notify_and_restarts_on_failure() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(UNIT)
    service = unit["Service"]
    assert service["Type"] == "notify"  # the supervisor sends READY=1 (supervisor.sd_notify)
    assert service["Restart"] == "on-failure"
    assert service["ExecStart"].split()[1:3] == ["daemon", "--foreground"]
    assert "HUP" in service["ExecReload"]  # SIGHUP reloads the configuration
    assert unit["Unit"]["Before"] == "remote-fs-pre.target"  # as tlshd.service
    assert unit["Install"]["WantedBy"] == "remote-fs.target"


def test_the_cli_offers_what_the_unit_runs() -> None:
    from quichsd.cli import build_parser

    args = build_parser().parse_args(["daemon", "--foreground"])
    assert args.command == "daemon" and args.foreground


def test_sd_notify_reaches_the_notify_socket(tmp_path) -> None:
    import socket

    from quichsd.daemon.supervisor import sd_notify

    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        listener.settimeout(2)
        assert sd_notify("READY=1", env={"NOTIFY_SOCKET": path})
        assert listener.recv(64) == b"READY=1"
    assert not sd_notify("READY=1", env={})  # not under systemd: nothing to do
