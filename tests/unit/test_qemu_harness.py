"""Host-side pieces of the QEMU tier that can be checked without booting: the initramfs
archive format and the report summary."""
from __future__ import annotations

import subprocess
import sys

from tests.qemu.run import summarize
from tests.qemu.vm import cpio_newc


def read_newc(data: bytes) -> list[tuple[str, int, bytes]]:
    """A reader for the "newc" cpio format, as the kernel's initramfs unpacker reads it."""
    out, off = [], 0
    while True:
        assert data[off:off + 6] == b"070701"
        fields = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        assert data[off + 110 + namesize - 1] == 0
        off += 110 + namesize
        off += -off % 4
        body = data[off: off + size]
        off += size
        off += -off % 4
        if name == "TRAILER!!!":
            assert off == len(data)
            return out
        out.append((name, mode, body))


def test_initramfs_archive_round_trips() -> None:
    entries = [("bin", 0o040755, b""), ("bin/busybox", 0o100755, b"\x7fELF" + bytes(range(7))),
               ("bin/sh", 0o120777, b"busybox"), ("init", 0o100755, b"#!/bin/sh\n")]
    assert read_newc(cpio_newc(entries)) == entries


def test_summary_of_a_guest_report(tmp_path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2"/></testsuites>')
    assert summarize(junit) == "guest: 2 passed, 1 failed, 0 errors, 2 skipped, 0 xfailed"
    assert summarize(tmp_path / "absent.xml") == "no JUnit report from the guest"


def test_summary_counts_an_xfail_apart_from_a_skip(tmp_path) -> None:
    """What pytest's --junitxml writes for these outcomes: it counts an xfail among the
    skipped, with type="pytest.xfail"; an error in setup is an <error>."""
    case = tmp_path / "test_outcomes.py"
    case.write_text(
        "import pytest\n"
        "def test_pass(): pass\n"
        "def test_fail(): assert 0\n"
        "@pytest.mark.skip(reason='absent')\n"
        "def test_skip(): pass\n"
        "@pytest.mark.xfail(reason='known')\n"
        "def test_xfail(): assert 0\n"
        "def test_xfail_imperative(): pytest.xfail('known')\n"
        "@pytest.fixture\n"
        "def broken(): raise RuntimeError\n"
        "def test_error(broken): pass\n")
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                    str(case)], cwd=tmp_path, capture_output=True, check=False, timeout=60)
    assert summarize(junit) == "guest: 1 passed, 1 failed, 1 errors, 1 skipped, 2 xfailed"
