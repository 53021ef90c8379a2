"""The daemon's logging set-up (quichsd.daemon.logsetup, spec tlshd-behaviour §2.7): syslog
that is missing at start-up or goes away later costs one line on stderr, never a logging
traceback per record, and no record is lost from stderr.

Each case runs the set-up in a child process (it replaces the root logger's handlers), with
the syslog address pointed at a path of the test's own."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import logging, sys
from quichsd.daemon import logsetup
from quichsd.daemon.config import NOTICE
logsetup.setup(False, logging.INFO, {also_stderr}, syslog_address={address!r})
log = logging.getLogger("quichsd.test")
for step in sys.argv[1:]:
    if step == "wait":
        sys.stdin.readline()  # the test changes syslog meanwhile
        continue
    level, _, text = step.partition(":")
    log.log(dict(info=logging.INFO, error=logging.ERROR, notice=NOTICE)[level], "%s", text)
    print("logged", text, flush=True)
"""


def child(tmp_path: Path, address: str, *steps: str, also_stderr: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", CHILD.format(also_stderr=also_stderr, address=address),
                             *steps],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out, err


def no_logging_traceback(stderr: str) -> None:
    assert "Logging error" not in stderr and "Traceback" not in stderr, stderr


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096).rstrip(b"\0")  # SysLogHandler ends each datagram with a NUL


def syslog_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    return sock


@pytest.mark.parametrize("also_stderr", [False, True], ids=["syslog", "syslog+stderr (-s)"])
def test_missing_syslog_at_start_means_stderr_with_one_line(tmp_path, also_stderr):
    missing = str(tmp_path / "no-such-log")
    _, err = finish(child(tmp_path, missing, "info:first record", "error:second record", "notice:third",
                          also_stderr=also_stderr))
    no_logging_traceback(err)
    lines = err.splitlines()
    assert lines[0] == f"quichsd: syslog ({missing}) unavailable: [Errno 2] No such file or directory; " \
                       f"logging to stderr"
    pid_prefix = lines[1].split("]:")[0] + "]:"
    assert pid_prefix.startswith("quichsd[")
    # Each record once (with -s too: the copy to stderr is the only stderr handler).
    assert lines[1:] == [f"{pid_prefix} INFO first record", f"{pid_prefix} ERROR second record",
                         f"{pid_prefix} NOTICE third"]


def test_syslog_going_away_degrades_to_stderr_once_and_comes_back(tmp_path):
    path = tmp_path / "log"
    syslog = syslog_socket(path)
    proc = child(tmp_path, str(path), "info:one", "wait", "error:two", "info:three", "wait", "notice:four")
    try:
        pid = proc.pid
        # LOG_AUTH|LOG_INFO, as openlog(LOG_PID)
        assert received(syslog) == f"<38>quichsd[{pid}]: one".encode()
        syslog.close()
        path.unlink()  # syslog gone
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "logged one\n"
        assert proc.stdout.readline() == "logged two\n"
        assert proc.stdout.readline() == "logged three\n"
        syslog = syslog_socket(path)  # and back
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert received(syslog) == f"<37>quichsd[{pid}]: four".encode()  # our NOTICE is LOG_NOTICE
        _, err = finish(proc)
    finally:
        syslog.close()
        if proc.poll() is None:
            proc.kill()
    no_logging_traceback(err)
    lines = err.splitlines()
    assert len(lines) == 4, err
    assert lines[0].startswith(f"quichsd: syslog ({path}) does not take records: ")
    assert lines[0].endswith("; logging to stderr")
    assert lines[1:] == [f"quichsd[{pid}]: ERROR two", f"quichsd[{pid}]: INFO three",
                         f"quichsd: syslog ({path}) takes records again"]


def test_with_stderr_copy_a_lost_syslog_does_not_duplicate_records(tmp_path):
    path = tmp_path / "log"
    syslog = syslog_socket(path)
    proc = child(tmp_path, str(path), "info:one", "wait", "error:two", also_stderr=True)
    try:
        assert received(syslog).endswith(b"]: one")
        syslog.close()
        path.unlink()
        proc.stdin.write("\n")
        proc.stdin.flush()
        _, err = finish(proc)
    finally:
        syslog.close()
        if proc.poll() is None:
            proc.kill()
    no_logging_traceback(err)
    lines = err.splitlines()
    ours = [line.split(": ", 1)[1] for line in lines if line.startswith("quichsd[")]
    assert ours == ["INFO one", "ERROR two"]
    assert len([line for line in lines
                if "does not take records" in line and "stderr only (-s)" in line]) == 1


@pytest.mark.skipif(os.path.exists("/dev/log"),
                    reason="this machine has /dev/log; the cases above inject a path")
def test_the_cli_set_up_on_a_machine_without_dev_log(tmp_path):
    """`quichsd daemon -s` as run here (no /dev/log): it used to print a "--- Logging error ---"
    traceback after every record."""
    code = ("import logging; from quichsd.cli import _daemon_logging; _daemon_logging(False, 0, True); "
            "logging.getLogger('quichsd').error('Failed to load config file: x'); "
            "logging.getLogger('quichsd').info('Shutting down.')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    no_logging_traceback(done.stderr)
    lines = done.stderr.splitlines()
    assert lines[0] == ("quichsd: syslog (/dev/log) unavailable: [Errno 2] No such file or directory; "
                        "logging to stderr")
    assert [line.split(": ", 1)[1] for line in lines[1:]] == ["ERROR Failed to load config file: x",
                                                              "INFO Shutting down."]
