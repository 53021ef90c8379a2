"""Run as an unprivileged user that keeps only CAP_NET_ADMIN (spec tlshd-behaviour §1.9, §2.5).

tlshd runs as root and never drops anything (§2.5). ACCEPT needs CAP_NET_ADMIN in the
initial user namespace, and key material is reachable by possession once the keyrings are
linked into the session keyring (§5), so nothing else of root is needed after start-up.
`drop_privileges` switches to a user while keeping CAP_NET_ADMIN; `read_task_status` reads
every thread's credentials from /proc so tests and the daemon can check the result.

Linux credentials are per *thread*: capset(2), the securebits and the bounding set act on
the calling thread only, and a new thread copies its creator's. So the drop must happen
while the process has one thread; threads started afterwards inherit the reduced set.
`drop_privileges` refuses to run with more than one thread. Call it after the keyrings are
linked (keyring.link_keyrings) and before any thread or executor starts.

The syscalls are csrc/caps.c (cffi module quichsd._sysabi); no libcap, no ctypes.
"""
from __future__ import annotations

import errno
import grp
import os
import pwd
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._sysabi import ffi, lib

__all__ = [
    "CAP_NET_ADMIN",
    "PrivilegeError",
    "ThreadCredentials",
    "cap_mask",
    "cap_names",
    "drop_privileges",
    "read_task_status",
    "resolve_user",
]

CAP_NET_ADMIN: int = lib.CAP_NET_ADMIN

# The capabilities the drop itself uses, before it gives them up.
_NEEDED_TO_DROP = {"CAP_SETUID": lib.CAP_SETUID, "CAP_SETGID": lib.CAP_SETGID, "CAP_SETPCAP": lib.CAP_SETPCAP}

# Names for messages, from the C headers' numbering (uapi <linux/capability.h>).
_CAP_NAMES = {
    0: "CAP_CHOWN", 1: "CAP_DAC_OVERRIDE", 2: "CAP_DAC_READ_SEARCH", 3: "CAP_FOWNER",
    4: "CAP_FSETID", 5: "CAP_KILL", 6: "CAP_SETGID", 7: "CAP_SETUID", 8: "CAP_SETPCAP",
    9: "CAP_LINUX_IMMUTABLE", 10: "CAP_NET_BIND_SERVICE", 11: "CAP_NET_BROADCAST",
    12: "CAP_NET_ADMIN", 13: "CAP_NET_RAW", 14: "CAP_IPC_LOCK", 15: "CAP_IPC_OWNER",
    16: "CAP_SYS_MODULE", 17: "CAP_SYS_RAWIO", 18: "CAP_SYS_CHROOT", 19: "CAP_SYS_PTRACE",
    20: "CAP_SYS_PACCT", 21: "CAP_SYS_ADMIN", 22: "CAP_SYS_BOOT", 23: "CAP_SYS_NICE",
    24: "CAP_SYS_RESOURCE", 25: "CAP_SYS_TIME", 26: "CAP_SYS_TTY_CONFIG", 27: "CAP_MKNOD",
    28: "CAP_LEASE", 29: "CAP_AUDIT_WRITE", 30: "CAP_AUDIT_CONTROL", 31: "CAP_SETFCAP",
    32: "CAP_MAC_OVERRIDE", 33: "CAP_MAC_ADMIN", 34: "CAP_SYSLOG", 35: "CAP_WAKE_ALARM",
    36: "CAP_BLOCK_SUSPEND", 37: "CAP_AUDIT_READ", 38: "CAP_PERFMON", 39: "CAP_BPF",
    40: "CAP_CHECKPOINT_RESTORE",
}


class PrivilegeError(OSError):
    """Dropping privileges failed or was refused; nothing partial is left silently."""


def cap_mask(caps: Iterable[int]) -> int:
    """The 64-bit mask with bit n set for each capability n (as /proc shows CapEff)."""
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    return mask


def cap_names(mask: int) -> list[str]:
    """Names of the capabilities set in `mask`, lowest first."""
    return [_CAP_NAMES.get(bit, f"cap_{bit}") for bit in range(64) if mask >> bit & 1]


@dataclass(frozen=True)
class ThreadCredentials:
    """One thread's credentials, from /proc/PID/task/TID/status."""

    tid: int
    uids: tuple[int, int, int, int]  # real, effective, saved, filesystem
    gids: tuple[int, int, int, int]
    groups: tuple[int, ...]
    cap_inh: int
    cap_prm: int
    cap_eff: int
    cap_bnd: int
    cap_amb: int
    no_new_privs: bool

    @classmethod
    def parse(cls, tid: int, status: str) -> ThreadCredentials:
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

        def ids(name: str) -> tuple[int, ...]:
            return tuple(int(x) for x in fields[name].split())

        uids, gids = ids("Uid"), ids("Gid")
        return cls(
            tid=tid,
            uids=(uids[0], uids[1], uids[2], uids[3]),
            gids=(gids[0], gids[1], gids[2], gids[3]),
            groups=ids("Groups"),
            cap_inh=int(fields["CapInh"], 16),
            cap_prm=int(fields["CapPrm"], 16),
            cap_eff=int(fields["CapEff"], 16),
            cap_bnd=int(fields["CapBnd"], 16),
            cap_amb=int(fields["CapAmb"], 16),
            no_new_privs=int(fields.get("NoNewPrivs", "0")) == 1,
        )


def read_task_status(pid: int | str = "self") -> dict[int, ThreadCredentials]:
    """Credentials of every thread of process `pid`, keyed by thread id.

    Reads /proc/PID/task/*/status; a thread that exits during the scan is left out.
    """
    out: dict[int, ThreadCredentials] = {}
    for task in sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda p: int(p.name)):
        try:
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[int(task.name)] = ThreadCredentials.parse(int(task.name), status)
    return out


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise PrivilegeError(-rc, f"{what}: {os.strerror(-rc)}")
    return rc


def _capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread."""
    eff, prm, inh = ffi.new("uint64_t *"), ffi.new("uint64_t *"), ffi.new("uint64_t *")
    _check(lib.quichsd_capget(0, eff, prm, inh), "capget")
    return eff[0], prm[0], inh[0]


def _bounding_caps() -> list[int]:
    """Every capability number the running kernel knows (PR_CAPBSET_READ until EINVAL)."""
    caps = []
    for cap in range(64):
        rc = lib.quichsd_capbset_read(cap)
        if rc == -errno.EINVAL:
            break
        caps.append(cap)
    return caps


def resolve_user(user: str | int, group: str | int | None = None) -> tuple[int, int]:
    """(uid, gid) to drop to; PrivilegeError for an unknown name or for uid 0."""
    try:
        entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
    except KeyError:
        if isinstance(user, str):
            raise PrivilegeError(errno.EINVAL, f"no such user {user!r}") from None
        uid, gid = user, user  # a bare uid with no passwd entry: same-numbered group
    else:
        uid, gid = entry.pw_uid, entry.pw_gid
    if group is not None:
        if isinstance(group, str):
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise PrivilegeError(errno.EINVAL, f"no such group {group!r}") from None
        else:
            gid = group
    if uid == 0:
        raise PrivilegeError(errno.EINVAL, "refusing to 'drop' to uid 0")
    return uid, gid


def _preflight(keep_mask: int) -> None:
    if os.geteuid() != 0:
        raise PrivilegeError(errno.EPERM, f"dropping privileges needs euid 0; running as uid {os.geteuid()}")
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1:
        raise PrivilegeError(
            errno.EBUSY,
            f"process has {len(threads)} threads; capabilities are per thread, so drop "
            "privileges before starting any thread",
        )
    eff, prm, _ = _capget()
    missing = [name for name, cap in _NEEDED_TO_DROP.items() if not eff >> cap & 1]
    missing += cap_names(keep_mask & ~prm)
    if missing:
        raise PrivilegeError(errno.EPERM, f"cannot drop privileges without {', '.join(missing)}")


def drop_privileges(
    user: str | int, *, group: str | int | None = None, keep: Iterable[int] = (CAP_NET_ADMIN,)
) -> ThreadCredentials:
    """Become `user` (name or uid) keeping only the capabilities in `keep` (CAP_NET_ADMIN).

    Steps, all on the single thread: set SECBIT_KEEP_CAPS so setuid keeps the permitted set;
    drop every other capability from the bounding set; clear supplementary groups;
    setresgid/setresuid to the user (real, effective, saved); set effective = permitted =
    `keep`, inheritable = 0; clear keep-caps again and set no_new_privs so no execve can
    regain anything. The result is checked against /proc and returned; any shortfall raises
    PrivilegeError. The session and process keyrings stay as they were, so keys linked
    before the call remain possessed.
    """
    keep_mask = cap_mask(keep)
    uid, gid = resolve_user(user, group)
    _preflight(keep_mask)

    bits = _check(lib.quichsd_get_securebits(), "PR_GET_SECUREBITS")
    _check(lib.quichsd_set_securebits(bits | lib.SECBIT_KEEP_CAPS), "PR_SET_SECUREBITS")
    for cap in _bounding_caps():
        if not keep_mask >> cap & 1:
            _check(lib.quichsd_capbset_drop(cap), f"PR_CAPBSET_DROP {_CAP_NAMES.get(cap, cap)}")
    os.setgroups([])
    _check(lib.quichsd_setresgid(gid, gid, gid), f"setresgid({gid})")
    _check(lib.quichsd_setresuid(uid, uid, uid), f"setresuid({uid})")
    _check(lib.quichsd_capset(keep_mask, keep_mask, 0), "capset")
    _check(lib.quichsd_set_keepcaps(0), "PR_SET_KEEPCAPS 0")
    _check(lib.quichsd_set_no_new_privs(), "PR_SET_NO_NEW_PRIVS")
    return _verify(uid, gid, keep_mask)


def _verify(uid: int, gid: int, keep_mask: int) -> ThreadCredentials:
    creds = read_task_status()[threading.get_native_id()]
    problems = []
    if creds.uids != (uid,) * 4:
        problems.append(f"uids {creds.uids}")
    if creds.gids != (gid,) * 4:
        problems.append(f"gids {creds.gids}")
    if creds.groups:
        problems.append(f"groups {creds.groups}")
    for name, value in (("CapEff", creds.cap_eff), ("CapPrm", creds.cap_prm), ("CapBnd", creds.cap_bnd)):
        if value != keep_mask:
            problems.append(f"{name} {cap_names(value)}")
    if creds.cap_inh or creds.cap_amb:
        problems.append(f"CapInh {creds.cap_inh:#x} CapAmb {creds.cap_amb:#x}")
    if problems:
        raise PrivilegeError(errno.EPERM, "privilege drop incomplete: " + "; ".join(problems))
    return creds
