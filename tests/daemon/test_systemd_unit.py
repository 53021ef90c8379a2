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


def test_dbus_policy_lets_the_status_process_own_the_name_and_only_root_reload():
    import xml.etree.ElementTree as ET

    from quichsd.daemon.config import DEFAULT_USER
    from quichsd.daemon.dbus_service import INTERFACE_NAME, SERVICE_NAME

    root = ET.parse(Path(__file__).resolve().parents[2] / "contrib" / "dbus" / "org.quichsd1.conf").getroot()
    policies = {p.get("user") or p.get("context"): p for p in root.iter("policy")}
    owners = {who for who, p in policies.items() for a in p.iter("allow") if a.get("own") == SERVICE_NAME}
    assert owners == {"root", DEFAULT_USER}
    default = [a.attrib for a in policies["default"].iter("allow")]
    assert {"send_destination": SERVICE_NAME, "send_interface": INTERFACE_NAME,
            "send_member": "GetCounters"} in default
    assert not any(a.get("send_member") == "Reload" or (a.get("send_interface") in (None, INTERFACE_NAME)
                                                         and "send_member" not in a) for a in default)
