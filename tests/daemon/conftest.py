"""Keyring fixtures shared by the daemon tests: a fresh session keyring per test, and
cleanup of keys linked into root's user keyring (which outlives the test)."""
from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

import pytest

from quichsd.daemon import keyring as kr
from quichsd.daemon.keyring import KeyringError


def keyctl_unavailable() -> str | None:
    try:
        kr.session_keyring(create=True)
    except KeyringError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            return f"keyctl(2) unavailable here: {exc}"
    return None


needs_keyctl = pytest.mark.skipif(bool(keyctl_unavailable()), reason=str(keyctl_unavailable()))


@pytest.fixture
def session() -> int:
    """A fresh anonymous session keyring for this test; its serial."""
    return kr.join_session_keyring()


@pytest.fixture
def user_keyring_links() -> Iterator[list[int]]:
    """Serials the test links into root's user keyring (0 entries ignored); unlinked after."""
    links: list[int] = []
    yield links
    for serial in links:
        if serial:
            with contextlib.suppress(KeyringError):
                kr.unlink(serial, kr.KEY_SPEC_USER_KEYRING)


@pytest.fixture
def daemons():
    """Harness daemons (daemon_proc.Daemon) a test starts; stopped afterwards."""
    made: list = []
    yield made
    for d in made:
        d.stop()
