"""The assembled daemon (service.build_supervisor) in a subprocess, with only the request
source injected: privileges per thread, reload by replacing workers, and the D-Bus status
process fed by the workers, against a real dbus-daemon."""
from __future__ import annotations

import errno
import os
import pwd
import signal
import time
import uuid

import pytest

from quichsd.daemon.dbus_service import read_status
from quichsd.daemon.privileges import CAP_NET_ADMIN, read_task_status
from tests.daemon.daemon_proc import Daemon, config_text, server, silent_address
from tests.daemon.test_dbus import DBUS_DAEMON, private_bus

NOBODY = 65534


def _why_no_drop() -> str | None:
    if os.geteuid() != 0:
        return f"the daemon only drops privileges when started as root; these tests run as uid {os.geteuid()}"
    try:
        if pwd.getpwnam("nobody").pw_uid != NOBODY:
            return "user nobody is not uid 65534 here"
    except KeyError:
        return "no user 'nobody' on this machine"
    return None


needs_root = pytest.mark.skipif(_why_no_drop() is not None, reason=_why_no_drop() or "")


def wait_until(pred, timeout: float = 10.0, what: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@needs_root
def test_every_thread_of_every_child_is_nobody_with_only_net_admin(pki, server_factory, tmp_path, daemons):
    d = Daemon(tmp_path, config_text(pki), workers=2)
    daemons.append(d)
    d.wait_event(lambda e: len(d.up_pids()) >= 2)
    srv = server(server_factory, pki)
    rid, _ = d.send(address=list(srv.address), timeout_ms=5000)  # a full handshake after the drop
    assert d.wait_event(lambda e: e["event"] == "done" and e["id"] == rid)["status"] == 0
    udp, silent = silent_address()
    rid, _ = d.send(address=list(silent), timeout_ms=20000)  # keeps a handshake thread alive
    taken = d.wait_event(lambda e: e["event"] == "taken" and e["id"] == rid)
    threads = wait_until(lambda: len(read_task_status(taken["pid"])) > 1 and read_task_status(taken["pid"]),
                         what="a handshake thread")
    for pid in d.up_pids():
        tasks = threads if pid == taken["pid"] else read_task_status(pid)
        for tid, creds in tasks.items():
            assert creds.uids == (NOBODY,) * 4 and creds.gids == (NOBODY,) * 4, (pid, tid, creds)
            assert creds.cap_eff == creds.cap_prm == creds.cap_bnd == 1 << CAP_NET_ADMIN, (pid, tid, creds)
            assert creds.cap_inh == creds.cap_amb == 0
    assert "runs as uid 65534 with CAP_NET_ADMIN" in d.log()
    # The supervisor itself stays root, to read files again on a reload.
    assert read_task_status(d.proc.pid)[d.proc.pid].uids == (0, 0, 0, 0)
    udp.close()


@needs_root
def test_user_root_keeps_root(pki, tmp_path, daemons):
    d = Daemon(tmp_path, config_text(pki, extra="dbus = none\nuser = root\n"), workers=1)
    daemons.append(d)
    pid = d.wait_event(lambda e: e["event"] == "up")["pid"]
    assert read_task_status(pid)[pid].uids == (0, 0, 0, 0)
    assert "keeps root ([quichsd] user = root)" in d.log()


def test_unknown_user_is_refused_at_start(pki, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the user is only resolved when started as root")
    from quichsd.daemon.config import load_file
    from quichsd.daemon.privileges import PrivilegeError
    from quichsd.daemon.service import build_supervisor

    path = tmp_path / "config"
    path.write_text(config_text(pki, extra="dbus = none\nuser = no-such-user-here\n"))
    with pytest.raises(PrivilegeError, match="no such user"):
        build_supervisor(lambda: None, load_file(str(path)), str(path))


def test_reload_replaces_workers_and_old_ones_finish_their_requests(pki, server_factory, tmp_path, daemons):
    d = Daemon(tmp_path, config_text(pki, 7.5), workers=1)
    daemons.append(d)
    old = d.wait_event(lambda e: e["event"] == "up")["pid"]
    udp, silent = silent_address()
    rid, mine = d.send(address=list(silent), timeout_ms=2500)  # in flight across the reload
    d.wait_event(lambda e: e["event"] == "taken" and e["id"] == rid)
    d.config.write_text(config_text(pki, 3.25))
    d.proc.send_signal(signal.SIGHUP)
    new = d.wait_event(lambda e: e["event"] == "up" and e["pid"] != old)["pid"]
    # the old worker takes no new request once its listener has seen the stop flag
    d.wait_event(lambda e: e["event"] == "stopped listening" and e["pid"] == old)
    srv = server(server_factory, pki)
    rid2, _ = d.send(address=list(srv.address), timeout_ms=5000)
    assert d.wait_event(lambda e: e["event"] == "done" and e["id"] == rid2) == \
        {"event": "done", "id": rid2, "status": 0, "pid": new}  # new requests go to the new worker
    # The old worker kept its request to the end (its own timeout), then left.
    done = d.wait_event(lambda e: e["event"] == "done" and e["id"] == rid, timeout=10)
    assert (done["status"], done["pid"]) == (errno.ETIMEDOUT, old)
    mine.settimeout(5)
    assert mine.recv(1) == b""
    wait_until(lambda: not os.path.exists(f"/proc/{old}") or _zombie(old), what="the old worker to exit")
    assert "Configuration reloaded successfully" in d.log()
    udp.close()
    assert d.stop() == 0


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or being reaped as we read (ESRCH)
        return True


# ---- D-Bus -------------------------------------------------------------------------------------

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:abstract=/quichsd-test/{name}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow send_type="method_call"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def any_user_bus(tmp_path):
    """A private bus every uid may use (the status process runs as nobody), on an abstract
    socket (no directory permissions in the way)."""
    if DBUS_DAEMON is None:
        pytest.skip("dbus-daemon binary not found (make system-deps installs it)")
    conf = tmp_path / "bus.conf"
    conf.write_text(BUS_CONFIG.format(name=uuid.uuid4().hex))
    with private_bus(f"--config-file={conf}", address_prefix="unix:abstract=") as address:
        yield address


def test_status_process_serves_the_workers_counters_on_dbus(pki, server_factory, tmp_path, daemons,
                                                             any_user_bus):
    d = Daemon(tmp_path, config_text(pki, extra="dbus = session\n"), workers=2,
               env={"DBUS_SESSION_BUS_ADDRESS": any_user_bus})
    daemons.append(d)
    d.wait_event(lambda e: len(d.up_pids()) >= 2)
    wait_until(lambda: "D-Bus status service org.quichsd1" in d.log(), what="the status service")
    srv = server(server_factory, pki)
    udp, silent = silent_address()
    ids = [d.send(address=list(srv.address), timeout_ms=5000)[0] for _ in range(3)]
    ids.append(d.send(address=list(silent), timeout_ms=300)[0])
    for rid in ids:
        d.wait_event(lambda e, rid=rid: e["event"] == "done" and e["id"] == rid)
    status = wait_until(lambda: (s := read_status(any_user_bus))["counters"]["accepted"] >= 4 and
                        s["counters"]["in_flight"] == 0 and s, what="the counters")
    counters = status["counters"]
    assert (counters["accepted"], counters["succeeded"], counters["failed"]) == (4, 3, 1)
    assert counters["failed.ETIMEDOUT"] == 1
    ok = [r for r in status["recent"] if r["status"] == 0]
    assert len(ok) == 3
    host, port = srv.address
    for record in ok:
        assert (record["role"], record["alpn"], record["suite"], record["peer"]) == \
            ("client", "h3", "TLS_AES_128_GCM_SHA256", f"{host}:{port}")
        assert record["duration_ms"] > 0
    # Reload() on the bus reaches the supervisor, which replaces the workers.
    before = set(d.up_pids())
    from quichsd.daemon.dbus_service import close_bus, open_bus
    from tests.daemon.test_dbus import _call, _run  # the raw method call, as any D-Bus client makes it

    async def reload() -> bool:
        bus = await open_bus(any_user_bus)
        try:
            return (await _call(bus, "Reload")).body[0]
        finally:
            await close_bus(bus)

    assert _run(reload()) is True
    d.wait_event(lambda e: len(d.up_pids() - before) >= 2)
    assert "Configuration reloaded successfully" in d.log()
    udp.close()
    assert d.stop() == 0
