"""The daemon assembled: configuration, keyrings, privileges, workers and the status process.

`build_supervisor(source_factory, config, path)` is what `quichsd daemon` runs with the
netlink source, and what the daemon tests run with an injected one: everything but the
request source is the same.

Start-up, in the supervisor (root, one thread): link `[authenticate] keyrings` and the
standard .nvme/.nfs/.nfsd keyrings into the session keyring (tlshd-behaviour §5), which the
children inherit. In each worker, before its first thread: read the configured files and
load the handshake code (preload.py), then drop to `[quichsd] user` keeping only
CAP_NET_ADMIN (privileges.py). The status process drops to the same user keeping nothing.
A reload re-links keyrings and replaces the workers (supervisor.py).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

from . import keyring as kr
from .config import NOTICE, DaemonConfig
from .preload import prepare_for_drop
from .privileges import CAP_NET_ADMIN, cap_mask, cap_names, drop_privileges, resolve_user
from .supervisor import Supervisor
from .worker import RequestSource

log = logging.getLogger(__name__)

_ROOT_NAMES = ("root", "0")
_base_level: int | None = None


def drops_privileges(config: DaemonConfig) -> bool:
    """Whether children drop to another user: only when root and not told to stay root."""
    return os.geteuid() == 0 and config.user not in _ROOT_NAMES


def _user_and_group(config: DaemonConfig) -> tuple[str | int, str | int | None]:
    """[quichsd] user/group as privileges.py takes them: digits are ids."""
    def value(text: str) -> str | int:
        return int(text) if text.isdigit() else text

    return value(config.user), value(config.group) if config.group else config.group


def check_user(config: DaemonConfig) -> None:
    """PrivilegeError now, in the supervisor, for a user or group the drop would refuse."""
    if drops_privileges(config):
        resolve_user(*_user_and_group(config))


def _drop(config: DaemonConfig, keep: Iterable[int], what: str) -> None:
    if not drops_privileges(config):
        if os.geteuid() == 0:
            log.info("%s %d keeps root ([quichsd] user = %s)", what, os.getpid(), config.user)
        return
    user, group = _user_and_group(config)
    creds = drop_privileges(user, group=group, keep=keep)
    log.info("%s %d runs as uid %d with %s", what, os.getpid(), creds.uids[0],
             ", ".join(cap_names(cap_mask(keep))) or "no capabilities")


def apply_debug(config: DaemonConfig) -> None:
    """[debug] (tlshd-behaviour §2.7, §4.3): loglevel != 0 logs at DEBUG; tls != 0 traces the
    TLS engine; nl != 0 traces the netlink library. Notices for what we do not support."""
    global _base_level
    debug = config.debug
    root = logging.getLogger()
    if _base_level is None:
        _base_level = root.level  # what the command line chose
    root.setLevel(logging.DEBUG if debug.loglevel else _base_level)
    logging.getLogger("quichsd.tls").setLevel(logging.DEBUG if debug.tls else logging.NOTSET)
    logging.getLogger("pyroute2").setLevel(logging.DEBUG if debug.nl else logging.WARNING)
    for role, settings in (("client", config.client), ("server", config.server)):
        if settings.pq_certificate:
            log.log(NOTICE, "[authenticate.%s] x509.pq.certificate ignored: ML-DSA certificates are not "
                            "supported yet; the traditional certificate is used", role)


def worker_init(config: DaemonConfig) -> None:
    apply_debug(config)
    if drops_privileges(config):
        prepare_for_drop(config)
    _drop(config, (CAP_NET_ADMIN,), "worker")


def status_init(config: DaemonConfig) -> None:
    _drop(config, (), "status process")


def on_reload(config: DaemonConfig) -> None:
    apply_debug(config)
    link_keyrings(config)


def link_keyrings(config: DaemonConfig) -> None:
    linked = kr.link_keyrings(config.keyrings)
    log.debug("keyrings linked: %s", ", ".join(name for name, serial in linked.items() if serial) or "none")


def build_supervisor(source_factory: Callable[[], RequestSource], config: DaemonConfig, path: str | None, *,
                     workers: int | None = None, preflight: Callable[[], None] | None = None,
                     stop_timeout: float = 5.0) -> Supervisor:
    check_user(config)
    on_reload(config)
    return Supervisor(
        source_factory, config, path, workers=workers or config.workers, worker_init=worker_init,
        status_service=config.dbus != "none", status_init=status_init, on_reload=on_reload,
        preflight=preflight, stop_timeout=stop_timeout,
    )
