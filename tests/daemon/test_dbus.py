"""The D-Bus status interface against a real, private dbus-daemon."""

import asyncio
import contextlib
import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from dbus_next import Message, MessageType

from quichsd.daemon.dbus_service import (
    INTERFACE_NAME,
    OBJECT_PATH,
    SERVICE_NAME,
    DbusService,
    DbusServiceError,
    close_bus,
    open_bus,
    read_status,
)
from quichsd.daemon.stats import HandshakeStats

DBUS_DAEMON = shutil.which("dbus-daemon") or ("/usr/bin/dbus-daemon"
                                              if os.path.exists("/usr/bin/dbus-daemon") else None)
pytestmark = pytest.mark.skipif(DBUS_DAEMON is None, reason="dbus-daemon binary not found")

SECRETISH = re.compile(r"secret|key|psk|ticket|master|private|password|token", re.I)
SUITE = "TLS_AES_128_GCM_SHA256"


@contextlib.contextmanager
def private_bus(*args: str, address_prefix: str = "unix:") -> Iterator[str]:
    """A dbus-daemon started with `args`; yields the address it prints, kills it afterwards."""
    proc = subprocess.Popen([DBUS_DAEMON, *args, "--nofork", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        if not ready:
            pytest.fail("dbus-daemon printed no address within 10 s")
        address = proc.stdout.readline().strip()
        assert address.startswith(address_prefix), address
        yield address
    finally:
        proc.kill()
        proc.wait(5)
        proc.stdout.close()


@pytest.fixture(scope="module")
def bus_address(tmp_path_factory):
    sock = tmp_path_factory.mktemp("dbus") / "bus"
    with private_bus("--session", f"--address=unix:path={sock}") as address:
        yield address


@pytest.fixture
def reload_calls():
    return {"n": 0, "result": True}


@pytest.fixture
def service(bus_address, reload_calls):
    stats = HandshakeStats(max_recent=4)

    def reload_cb():
        reload_calls["n"] += 1
        if isinstance(reload_calls["result"], Exception):
            raise reload_calls["result"]
        return reload_calls["result"]

    svc = DbusService(stats, reload_cb, bus_address=bus_address, version="test-1")
    svc.start(timeout=10)
    try:
        yield svc
    finally:
        svc.stop()


async def _call(bus, member, iface=INTERFACE_NAME, signature="", body=()):
    reply = await bus.call(Message(destination=SERVICE_NAME, path=OBJECT_PATH, interface=iface,
                                   member=member, signature=signature, body=list(body)))
    assert reply.message_type == MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    return reply


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def _plain(v):
    return {k: x.value for k, x in v.items()}


def test_counters_and_recent_change(service, bus_address):
    stats = service.stats

    async def go():
        bus = await open_bus(bus_address)
        try:
            r = await _call(bus, "GetCounters")
            assert r.signature == "a{st}"
            assert r.body[0] == {"accepted": 0, "succeeded": 0, "failed": 0, "in_flight": 0}
            r = await _call(bus, "GetRecent")
            assert r.signature == "aa{sv}" and r.body[0] == []

            t1 = stats.record_start()
            t2 = stats.record_start()
            t3 = stats.record_start()
            assert (await _call(bus, "GetCounters")).body[0]["in_flight"] == 3
            stats.record_done(t1, peer="192.0.2.1:443", role="client", alpn=b"h3",
                              suite=SUITE, status=0)
            stats.record_done(t2, peer="[2001:db8::1]:4433", role="server", alpn="",
                              suite="", status=-13)  # -EACCES, kernel-style sign
            stats.record_done(t3, peer="198.51.100.7:443", role="client", alpn="h3",
                              suite=SUITE, status=110)  # ETIMEDOUT

            counters = (await _call(bus, "GetCounters")).body[0]
            assert counters == {"accepted": 3, "succeeded": 1, "failed": 2, "in_flight": 0,
                                "failed.EACCES": 1, "failed.ETIMEDOUT": 1}
            recent = [_plain(d) for d in (await _call(bus, "GetRecent")).body[0]]
            assert [r["peer"] for r in recent] == ["192.0.2.1:443", "[2001:db8::1]:4433",
                                                  "198.51.100.7:443"]
            first = recent[0]
            assert first["role"] == "client" and first["alpn"] == "h3" and first["suite"] == SUITE
            assert first["status"] == 0 and first["status_name"] == "OK"
            assert first["duration_ms"] >= 0 and abs(first["time"] - time.time()) < 60
            assert recent[1]["status"] == 13 and recent[1]["status_name"] == "EACCES"

            # Bounded history: max_recent=4 keeps only the newest four.
            for i in range(5):
                stats.record_done(stats.record_start(), peer=f"peer{i}", role="client", status=0)
            recent = [_plain(d) for d in (await _call(bus, "GetRecent")).body[0]]
            assert [r["peer"] for r in recent] == ["peer1", "peer2", "peer3", "peer4"]

            props = await _call(bus, "GetAll", "org.freedesktop.DBus.Properties", "s",
                                [INTERFACE_NAME])
            assert _plain(props.body[0]) == {"Version": "test-1", "InFlight": 0}
            return recent
        finally:
            await close_bus(bus)

    recent = _run(go())
    # Nothing secret-like anywhere: only the fixed public fields, only plain scalar values.
    for rec in recent + stats.recent():
        assert set(rec) == {"time", "peer", "role", "alpn", "suite", "duration_ms", "status",
                            "status_name"}
        for k, v in rec.items():
            assert isinstance(v, (str, int, float)), (k, v)
            assert not SECRETISH.search(k) and not SECRETISH.search(str(v)), (k, v)
    with pytest.raises(TypeError):
        stats.record_done(stats.record_start(), peer="x", secret=b"\x00" * 32)


def test_reload_true_false_and_error(service, bus_address, reload_calls):
    async def go():
        bus = await open_bus(bus_address)
        try:
            results = []
            for outcome in (True, False, RuntimeError("bad config")):
                reload_calls["result"] = outcome
                r = await _call(bus, "Reload")
                assert r.signature == "b"
                results.append(r.body[0])
            return results
        finally:
            await close_bus(bus)

    assert _run(go()) == [True, False, False]
    assert reload_calls["n"] == 3


def test_handshake_completed_signal_from_other_thread(service, bus_address):
    async def go():
        bus = await open_bus(bus_address)
        try:
            got = asyncio.get_running_loop().create_future()

            def handler(msg):
                if (msg.message_type == MessageType.SIGNAL and msg.interface == INTERFACE_NAME
                        and msg.member == "HandshakeCompleted" and not got.done()):
                    got.set_result(msg)

            bus.add_message_handler(handler)
            await bus.call(Message(destination="org.freedesktop.DBus",
                                   path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="AddMatch",
                                   signature="s",
                                   body=[f"type='signal',interface='{INTERFACE_NAME}'"]))

            def feed():  # as a handshake worker thread would
                tok = service.stats.record_start()
                service.stats.record_done(tok, peer="203.0.113.9:443", role="server",
                                          alpn="h3", suite=SUITE, status=-111,
                                          duration_ms=12.5)
            t = threading.Thread(target=feed)
            t.start()
            t.join()
            return await asyncio.wait_for(got, 5)
        finally:
            await close_bus(bus)

    msg = _run(go())
    assert msg.path == OBJECT_PATH and msg.signature == "ssssdi"
    assert msg.body == ["203.0.113.9:443", "server", "h3", SUITE, 12.5, 111]


def test_read_status_matches(service, bus_address):
    stats = service.stats
    stats.record_done(stats.record_start(), peer="192.0.2.5:443", role="client", alpn="h3",
                      suite=SUITE, status=0)
    stats.record_start()  # one left in flight
    status = read_status(bus_address, timeout=5)
    assert status["counters"] == stats.counters()
    assert status["counters"]["in_flight"] == 1
    assert status["recent"] == stats.recent()
    assert status["version"] == "test-1"


def test_name_taken_and_no_daemon(service, bus_address, tmp_path):
    other = DbusService(HandshakeStats(), bus_address=bus_address)
    with pytest.raises(DbusServiceError, match="already owned"):
        other.start(timeout=5)
    with pytest.raises(DbusServiceError):
        read_status(f"unix:path={tmp_path}/nobus", timeout=2)


def test_bus_dies_under_service(tmp_path):
    sock = tmp_path / "bus"
    proc = subprocess.Popen([DBUS_DAEMON, "--session", "--nofork", "--print-address=1",
                             f"--address=unix:path={sock}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert select.select([proc.stdout], [], [], 10)[0], "dbus-daemon printed no address"
        address = proc.stdout.readline().strip()
        stats = HandshakeStats()
        svc = DbusService(stats, bus_address=address).start(timeout=10)
        proc.kill()
        proc.wait(5)
        svc._thread.join(5)  # the service thread notices and winds down on its own
        assert not svc._thread.is_alive() and not svc.connected
        stats.record_done(stats.record_start(), peer="p", role="client", status=0)  # no raise
        svc.stop()
    finally:
        proc.kill()
        proc.wait(5)
        proc.stdout.close()


def test_quichsd_status_command(service, bus_address, capsys):
    from quichsd.cli import main

    token = service.stats.record_start()
    service.stats.record_done(token, peer="192.0.2.7:4433", role="server", alpn="smb",
                              suite="TLS_AES_128_GCM_SHA256", status=13, duration_ms=3.5)
    assert main(["status", "--bus", bus_address]) == 0
    out = capsys.readouterr().out
    assert "accepted   1" in out and "failed     1" in out and "failed.EACCES 1" in out
    assert "192.0.2.7:4433" in out and "alpn=smb" in out and "status=EACCES" in out


def test_quichsd_status_without_a_daemon(bus_address, capsys):
    from quichsd.cli import main

    assert main(["status", "--bus", bus_address]) == 1
    assert "no daemon answered" in capsys.readouterr().err


def test_introspection_states_the_documented_signatures(service, bus_address):
    """The interface a client sees (dbus_service's docstring): the signatures come from the
    decorators of dbus_typed.py, not from annotations."""
    import xml.etree.ElementTree as ET

    async def go():
        bus = await open_bus(bus_address, system=False)
        try:
            reply = await _call(bus, "Introspect", "org.freedesktop.DBus.Introspectable")
        finally:
            await close_bus(bus)
        return reply.body[0]

    root = ET.fromstring(_run(go()))
    (iface,) = [i for i in root.iter("interface") if i.get("name") == INTERFACE_NAME]

    def args(kind):
        return {m.get("name"): [(a.get("type"), a.get("direction")) for a in m.iter("arg")]
                for m in iface.iter(kind)}

    assert args("method") == {"GetCounters": [("a{st}", "out")], "GetRecent": [("aa{sv}", "out")],
                              "Reload": [("b", "out")]}
    assert {p.get("name"): (p.get("type"), p.get("access")) for p in iface.iter("property")} == {
        "Version": ("s", "read"), "InFlight": ("t", "read")}
    assert args("signal") == {"HandshakeCompleted": [(t, "out") for t in "ssssdi"]}
