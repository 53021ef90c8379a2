"""Processes a test starts (`quichsd server` above all), each in a process group of its own
that stop() ends whole: a test that fails, or a run interrupted with Ctrl-C (pytest then
still tears its fixtures down), leaves no server behind holding a port."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Any

from quichsd.devcerts import PkiFiles

QUICHSD = [sys.executable, "-m", "quichsd"]


def start(argv: list[str], **popen_kw: Any) -> subprocess.Popen[str]:
    """`argv` in a new process group (text mode). Ctrl-C at the terminal no longer reaches
    it: the test's teardown stops it instead."""
    return subprocess.Popen(argv, process_group=0, text=True, **popen_kw)


def stop(proc: subprocess.Popen[str], timeout: float = 5.0) -> tuple[str, str]:
    """SIGTERM, then what it wrote once it exits; after `timeout` it is killed, and so is
    whatever it started that is still in its group."""
    out = err = None
    try:
        if proc.poll() is None:
            proc.terminate()
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
    finally:
        _kill_group(proc)
    return out or "", err or ""


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is empty: all of it exited
        os.killpg(proc.pid, signal.SIGKILL)


def quichsd_server(pki: PkiFiles, port: int, **popen_kw: Any) -> subprocess.Popen[str]:
    """`quichsd server` on the simulation backend at 127.0.0.1:`port` (ALPNs smb and h3,
    stdout piped), once it says it listens. The caller stops it with stop()."""
    proc = start([*QUICHSD, "server", "--listen", f"127.0.0.1:{port}", "--cert", pki.cert_file,
                  "--key", pki.key_file, "--alpn", "smb,h3", "--backend", "sim"],
                 stdout=subprocess.PIPE, **popen_kw)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "listening on" in first, first
    except BaseException:
        stop(proc)
        raise
    return proc
