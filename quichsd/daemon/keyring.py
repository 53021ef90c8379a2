"""Kernel keyrings: where tlshd's authentication material lives (spec tlshd-behaviour §5, §6.4).

The kernel hands the daemon key *serials*, never key bytes: PEER_IDENTITY serials for PSKs,
CERT/PRIVKEY serials for x509, and optionally a KEYRING serial (§1.5). This module turns
serials into material (`read_psk`, `read_certificate`, `read_private_key`), finds the
server-side PSK for a client identity (`find_server_psk`), links keyrings into the session
keyring as tlshd does at start-up and reload (`link_keyrings`), and computes the REMOTE_AUTH
serials of DONE (`remote_peer_ids`).

Everything goes through the raw syscalls in csrc/keyctl.c (cffi module quichsd._sysabi), so
neither libkeyutils nor ctypes is involved. Failures raise `KeyringError`, an OSError whose
errno is the kernel's and whose text says which key and which operation; a payload that is
not what the caller asked for raises `KeyPayloadError`. Mapping either to a DONE status
(EIO for missing or unreadable credentials, §9.3) is the caller's job.

Possession matters (§1.9, §5): a key is readable when it is reachable from this thread's
session or process keyring, or when its permission bits let this uid read it. Linking the
keyrings in before dropping privileges keeps the keys possessed afterwards.
"""
from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from .._sysabi import ffi, lib

__all__ = [
    "KEY_SPEC_PROCESS_KEYRING",
    "KEY_SPEC_SESSION_KEYRING",
    "KEY_SPEC_THREAD_KEYRING",
    "KEY_SPEC_USER_KEYRING",
    "MUTUAL_AUTH_PEER_ID",
    "STANDARD_KEYRINGS",
    "AuthMode",
    "KeyDescription",
    "KeyPayloadError",
    "KeyringError",
    "Psk",
    "add_key",
    "add_peer_certificate",
    "describe",
    "find_keyring",
    "find_server_psk",
    "invalidate",
    "join_session_keyring",
    "keyring_members",
    "link",
    "link_keyrings",
    "read",
    "read_certificate",
    "read_private_key",
    "read_psk",
    "remote_peer_ids",
    "search",
    "session_keyring",
    "setperm",
    "unlink",
]

log = logging.getLogger(__name__)

KEY_SPEC_THREAD_KEYRING: int = lib.KEY_SPEC_THREAD_KEYRING
KEY_SPEC_PROCESS_KEYRING: int = lib.KEY_SPEC_PROCESS_KEYRING
KEY_SPEC_SESSION_KEYRING: int = lib.KEY_SPEC_SESSION_KEYRING
KEY_SPEC_USER_KEYRING: int = lib.KEY_SPEC_USER_KEYRING

# Linked into the session keyring after the configured ones, always (1.4.0, §5).
STANDARD_KEYRINGS: tuple[str, ...] = (".nvme", ".nfs", ".nfsd")

# REMOTE_AUTH value of an x509 server whose client presented a verified chain (1.4.0, §6.4).
MUTUAL_AUTH_PEER_ID = 0xFFFFFFFF

# Description prefix of the asymmetric keys a client adds for the server's chain (§5).
PEER_CERT_DESCRIPTION = "TLS x509 {peername}"

PROC_KEYS = Path("/proc/keys")


class AuthMode(enum.IntEnum):
    """ACCEPT AUTH_MODE values (§1.5)."""

    UNAUTH = 1
    PSK = 2
    X509 = 3


# What an errno means for a key operation, in words an administrator can act on.
_HINTS = {
    errno.ENOKEY: "no such key, or not reachable from this process's keyrings",
    errno.EKEYEXPIRED: "the key has expired",
    errno.EKEYREVOKED: "the key has been revoked",
    errno.EKEYREJECTED: "the key was rejected",
    errno.EACCES: "permission denied: the key is not possessed (not reachable from the "
    "session or process keyring) and its permission bits do not allow uid {uid}",
    errno.EOPNOTSUPP: "this key type does not support the operation (e.g. reading an "
    "asymmetric key)",
    errno.ENODEV: "the kernel has no key type of that name",
    errno.EDQUOT: "the key quota of uid {uid} is exhausted",
    errno.EINVAL: "invalid argument (bad key type, description or payload size)",
}


class KeyringError(OSError):
    """A keyctl/add_key/request_key call failed; `errno` is the kernel's."""

    def __init__(self, err: int, op: str, target: str) -> None:
        hint = _HINTS.get(err, os.strerror(err)).format(uid=os.geteuid())
        name = errno.errorcode.get(err, str(err))
        super().__init__(err, f"{op} {target}: {hint} ({name})")
        self.op = op
        self.target = target


class KeyPayloadError(ValueError):
    """A key's payload is not the material the caller asked for (e.g. not DER)."""


def _target(serial: int) -> str:
    return f"key {serial}" if serial < 0 else f"key {serial} ({serial:#010x})"


def _check(rc: int, op: str, target: str) -> int:
    if rc < 0:
        raise KeyringError(-rc, op, target)
    return rc


# ---- thin syscall wrappers ------------------------------------------------------------------


# A first buffer large enough for PSKs, descriptions and most certificates: one call
# instead of a sizing call and a read (the calls return the full size; a larger payload is
# read again at that size).
_READ_GUESS = 4096


def _read_sized(call: Any, serial: int, op: str) -> bytes:
    """Run a KEYCTL_READ-style call: into a buffer of _READ_GUESS bytes, again at the size the
    call reports while the payload does not fit (or grows between the calls)."""
    size = _READ_GUESS
    while True:
        buf = ffi.new("char[]", max(size, 1))
        got = _check(call(serial, buf, size), op, _target(serial))
        if got <= size:
            payload: bytes = ffi.buffer(buf, got)[:]
            return payload
        size = got  # the key was updated between the calls


def read(serial: int) -> bytes:
    """The raw payload of key `serial` (KEYCTL_READ)."""
    return _read_sized(lib.quichsd_key_read, serial, "read")


@dataclass(frozen=True)
class KeyDescription:
    """KEYCTL_DESCRIBE's "type;uid;gid;perm;description", split."""

    serial: int
    type: str
    uid: int
    gid: int
    perm: int
    description: str

    @classmethod
    def parse(cls, serial: int, text: str) -> KeyDescription:
        # The kernel prints "%s;%d;%d;%08x;%s": the description is everything after the
        # fourth ';'. (tlshd takes the text after the *last* ';', which differs only for
        # descriptions that contain ';'.)
        parts = text.split(";", 4)
        if len(parts) != 5:
            raise KeyPayloadError(f"{_target(serial)}: malformed description {text!r}")
        ktype, uid, gid, perm, desc = parts
        return cls(serial, ktype, int(uid), int(gid), int(perm, 16), desc)


def describe(serial: int) -> KeyDescription:
    """Type, owner, permissions and description of key `serial` (KEYCTL_DESCRIBE)."""
    raw = _read_sized(lib.quichsd_key_describe, serial, "describe")
    return KeyDescription.parse(serial, raw.rstrip(b"\0").decode("utf-8", "surrogateescape"))


def search(keyring: int, key_type: str, description: str) -> int:
    """Serial of the key (type, description) found recursively from `keyring` (KEYCTL_SEARCH)."""
    rc = lib.quichsd_key_search(keyring, key_type.encode(), description.encode(), 0)
    return _check(rc, "search", f"{key_type} key {description!r} in keyring {keyring}")


def link(key: int, keyring: int) -> None:
    """Link `key` into `keyring` (KEYCTL_LINK); linking twice is harmless."""
    _check(lib.quichsd_key_link(key, keyring), "link", f"{_target(key)} into keyring {keyring}")


def unlink(key: int, keyring: int) -> None:
    """Remove the link from `keyring` to `key` (KEYCTL_UNLINK)."""
    _check(lib.quichsd_key_unlink(key, keyring), "unlink", f"{_target(key)} from keyring {keyring}")


def setperm(key: int, perm: int) -> None:
    """Set `key`'s permission mask, 0xPPUUGGOO as describe shows it (KEYCTL_SETPERM)."""
    _check(lib.quichsd_key_setperm(key, perm), "setperm", _target(key))


def invalidate(key: int) -> None:
    """Destroy `key` at once, wherever it is linked (KEYCTL_INVALIDATE)."""
    _check(lib.quichsd_key_invalidate(key), "invalidate", _target(key))


def session_keyring(*, create: bool = True) -> int:
    """Serial of this thread's session keyring (KEYCTL_GET_KEYRING_ID)."""
    rc = lib.quichsd_key_get_keyring_id(KEY_SPEC_SESSION_KEYRING, int(create))
    return _check(rc, "get", "session keyring")


def join_session_keyring(name: str | None = None) -> int:
    """Start a new anonymous session keyring (name None) or join a named one; its serial.

    Changes the calling thread's credentials only; threads started afterwards inherit it.
    """
    cname = ffi.NULL if name is None else name.encode()
    return _check(lib.quichsd_key_join_session_keyring(cname), "join", f"session keyring {name!r}")


def add_key(key_type: str, description: str, payload: bytes | None, keyring: int) -> int:
    """add_key(2): create or update a key in `keyring`; its serial."""
    data = b"" if payload is None else bytes(payload)
    rc = lib.quichsd_add_key(
        key_type.encode(), description.encode(), data if data else ffi.NULL, len(data), keyring
    )
    return _check(rc, "add", f"{key_type} key {description!r} to keyring {keyring}")


def keyring_members(keyring: int) -> list[int]:
    """Serials linked directly in `keyring` (its KEYCTL_READ payload, an int32 array)."""
    raw = read(keyring)
    return list(struct.unpack(f"={len(raw) // 4}i", raw[: len(raw) // 4 * 4]))


class RequestKeyrings:
    """The per-request keyrings (ACCEPT's KEYRING, spec tlshd-behaviour §5) linked into the
    session keyring while requests use them, as tlshd does, and unlinked when the last
    request using one ends (tlshd's child unlinks it after DONE). One worker serves many
    requests, possibly at once with the same keyring: links are counted per serial. The
    kernel's own link into our process keyring (made at ACCEPT) goes too, as it would with
    tlshd's child process; a keyring that was in the session keyring before (one of the
    configured keyrings, say) stays there. Failures are only debug-logged, as tlshd's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[int, int] = {}
        self._ours: set[int] = set()  # serials we linked into the session keyring

    @contextlib.contextmanager
    def linked(self, serial: int) -> Iterator[None]:
        self._enter(serial)
        try:
            yield
        finally:
            self._leave(serial)

    def _enter(self, serial: int) -> None:
        with self._lock:
            users = self._users.get(serial, 0)
            self._users[serial] = users + 1
            try:
                if users == 0 and serial not in keyring_members(KEY_SPEC_SESSION_KEYRING):
                    self._ours.add(serial)
                link(serial, KEY_SPEC_SESSION_KEYRING)
            except OSError as exc:
                log.debug("linking request keyring %d: %s", serial, exc)

    def _leave(self, serial: int) -> None:
        with self._lock:
            users = self._users.pop(serial) - 1
            if users:
                self._users[serial] = users
                return
            rings = [KEY_SPEC_PROCESS_KEYRING]
            if serial in self._ours:
                self._ours.discard(serial)
                rings.append(KEY_SPEC_SESSION_KEYRING)
            for ring in rings:
                try:
                    unlink(serial, ring)
                except OSError as exc:  # ENOENT: not linked there (no process keyring link)
                    log.debug("unlinking request keyring %d from %d: %s", serial, ring, exc)


REQUEST_KEYRINGS = RequestKeyrings()


# ---- authentication material ---------------------------------------------------------------


@dataclass(frozen=True)
class Psk:
    """A pre-shared key: the identity is the key's description (§5)."""

    serial: int
    type: str
    identity: str
    key: bytes = field(repr=False)


def read_psk(serial: int) -> Psk:
    """The PSK behind a PEER_IDENTITY serial: identity from describe, key bytes from read.

    As tlshd, any readable key type is accepted (nvme uses "psk", tests and scripts "user");
    only a keyring is refused, since its payload is a list of serials, not a key.
    """
    desc = describe(serial)
    if desc.type == "keyring":
        raise KeyPayloadError(f"{_target(serial)} is a keyring, not a pre-shared key")
    key = read(serial)
    if not key:
        raise KeyPayloadError(f"{_target(serial)} ({desc.type} {desc.description!r}) is empty")
    return Psk(serial, desc.type, desc.description, key)


def find_server_psk(identity: str, *, quic: bool, keyring: int = KEY_SPEC_SESSION_KEYRING) -> Psk:
    """The server's PSK for a client `identity`, searched recursively from the session keyring.

    TCP looks for a "psk" key only; QUIC falls back to a "user" key (§3.4, §6.2). The
    returned serial is the REMOTE_AUTH id (§6.4). Raises KeyringError (ENOKEY) if none.
    """
    key_type = "psk"
    try:
        serial = search(keyring, key_type, identity)
    except KeyringError as exc:
        if not quic:
            raise
        log.debug("no psk key %r, trying a user key: %s", identity, exc)
        key_type = "user"
        serial = search(keyring, key_type, identity)
    return Psk(serial, key_type, identity, read(serial))


def read_certificate(serial: int) -> x509.Certificate:
    """The local certificate behind a CERT serial: one DER certificate (§4.3, §5)."""
    data = read(serial)
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise KeyPayloadError(f"{_target(serial)}: payload is not a DER certificate: {exc}") from None


def read_private_key(serial: int) -> PrivateKeyTypes:
    """The local private key behind a PRIVKEY serial: unencrypted DER (PKCS#8, PKCS#1, SEC1)."""
    data = read(serial)
    try:
        return serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise KeyPayloadError(f"{_target(serial)}: payload is not a DER private key: {exc}") from None


# ---- keyring linking (start-up and reload, per-request keyrings) ---------------------------


def _proc_keys_lookup(key_type: str, name: str, proc_keys: Path = PROC_KEYS) -> int | None:
    """Scan /proc/keys for a key of `key_type` whose description is exactly `name`.

    Lines read "serial flags usage expiry perm uid gid type description: summary", with the
    type cut to 9 characters; only keys this thread may view are listed.
    """
    try:
        text = proc_keys.read_text(errors="surrogateescape")
    except OSError as exc:
        log.debug("cannot read %s: %s", proc_keys, exc)
        return None
    for line in text.splitlines():
        fields = line.split(None, 8)
        if len(fields) != 9 or fields[7] != key_type[:9]:
            continue
        if fields[8].startswith(name + ":"):
            return int(fields[0], 16)
    return None


def find_keyring(name: str) -> int | None:
    """Serial of the keyring called `name`, or None: keyutils' find_key_by_type_and_desc.

    First request_key(2) without a callout (this thread's keyrings, recursively), then a
    /proc/keys scan, which also finds kernel-owned keyrings such as ".nvme" (§5).
    """
    rc: int = lib.quichsd_request_key(b"keyring", name.encode(), 0)
    if rc >= 0:
        return rc
    log.debug("request_key(keyring, %r): %s", name, os.strerror(-rc))
    return _proc_keys_lookup("keyring", name)


def link_keyrings(names: Iterable[str], *, standard: bool = True) -> dict[str, int | None]:
    """Link the named keyrings, then ".nvme", ".nfs", ".nfsd", into the session keyring.

    tlshd does this at start-up and on every reload, and failures are only debug-logged
    (§5, §9.1 item 4); so here too nothing raises. Returns name -> linked serial, or None
    for a keyring that was not found or could not be linked.
    """
    wanted = list(names) + (list(STANDARD_KEYRINGS) if standard else [])
    linked: dict[str, int | None] = {}
    for name in wanted:
        serial = find_keyring(name)
        if serial is None:
            log.debug("keyring %r not found", name)
            linked[name] = None
            continue
        try:
            link(serial, KEY_SPEC_SESSION_KEYRING)
        except KeyringError as exc:
            log.debug("keyring %r: %s", name, exc)
            linked[name] = None
            continue
        log.debug("linked keyring %r (%d) into the session keyring", name, serial)
        linked[name] = serial
    return linked


# ---- DONE REMOTE_AUTH (§6.4) --------------------------------------------------------------


def add_peer_certificate(der: bytes, peername: str | None, keyring: int = KEY_SPEC_USER_KEYRING) -> int:
    """Add one peer certificate as an "asymmetric" key "TLS x509 <peername>"; its serial or 0.

    tlshd adds each certificate of the server's chain to root's user keyring and reports 0
    where the kernel's parser refuses it (e.g. an algorithm it does not know). All of a
    chain share one description, so each add_key replaces the previous link and only the
    last certificate stays linked; the earlier serials are still the ones reported. After
    privileges.drop_privileges, KEY_SPEC_USER_KEYRING is the *new* uid's user keyring.
    """
    desc = PEER_CERT_DESCRIPTION.format(peername=peername or "")
    try:
        return add_key("asymmetric", desc, der, keyring)
    except KeyringError as exc:
        log.debug("peer certificate for %r: %s", peername, exc)
        return 0


def remote_peer_ids(
    auth_mode: AuthMode | int,
    *,
    server: bool,
    quic: bool,
    peer_chain: Sequence[bytes] = (),
    peername: str | None = None,
    psk_serial: int = 0,
    keyring: int = KEY_SPEC_USER_KEYRING,
) -> list[int]:
    """The REMOTE_AUTH serials of a successful handshake, as tlshd 1.4.0 reports them (§6.4).

    `peer_chain` is the peer's verified chain (DER, leaf first); `psk_serial` the PSK that
    was used (the client's local one, or the server's matched one). For an x509 client this
    adds the server's chain to `keyring` (root's user keyring by default).
    """
    mode = AuthMode(auth_mode)
    if mode is AuthMode.PSK:
        if server or not quic:
            return [psk_serial] if psk_serial else []
        return []  # QUIC PSK client: no remote peer id
    if mode is AuthMode.X509:
        if server:
            return [MUTUAL_AUTH_PEER_ID] * len(peer_chain)
        return [add_peer_certificate(der, peername, keyring) for der in peer_chain]
    return []  # unauthenticated
