"""What a worker reads while it is still root, for use after it drops privileges.

tlshd reads certificates, keys and trust stores from disk at every handshake (spec
tlshd-behaviour §2.4), which needs root's file access. A worker that has dropped to an
unprivileged user (privileges.py) can no longer open /etc/tlshd's 0600 key files, and
Python modules imported lazily may live where that user cannot read either. So, before
the drop, `prepare_for_drop(config)`:

  * loads every certificate/key pair and trust store the configuration names into a
    `FileCache` and freezes it: from then on those objects are served from memory and a
    path that was not loaded is an error that names the cause, never a silent fallback
    (an unreadable trust store must not widen trust to the system store);
  * runs in-memory handshakes through the TLS engine (x509 with a client certificate and
    verification, resumption, external PSK) and imports the socket backends, so every
    module a handshake needs is loaded while it can still be read.

Without a drop the cache stays unfrozen and files are re-read as tlshd does.
"""
from __future__ import annotations

import errno
import importlib
import logging
import os
import pkgutil
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TypeVar

from cryptography import x509

from ..filecache import ParsedFiles
from ..tls.certs import TrustStore, load_crls
from ..tls.config import Credentials
from .config import DaemonConfig, X509Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Imported before a drop, besides all of quichsd: modules imported lazily elsewhere.
_LAZY_MODULES = (
    "encodings.idna",
    "concurrent.futures.thread",
    "cryptography.x509.verification",
    "cryptography.hazmat.primitives.kdf.hkdf",
)


class FileCache:
    """Credentials and trust stores by path; once frozen, nothing more is read from disk."""

    def __init__(self) -> None:
        self._credentials: dict[tuple[str, str], Credentials] = {}
        self._trust: dict[str, TrustStore] = {}
        self._crls: dict[str, tuple[x509.CertificateRevocationList, ...]] = {}
        self._missing: set[str] = set()
        self._lock = threading.Lock()
        self.frozen = False

    def credentials(self, cert_file: str, key_file: str) -> Credentials:
        if not self.frozen:
            return Credentials.from_files(cert_file, key_file)
        with self._lock:
            found = self._credentials.get((cert_file, key_file))
        if found is None:
            raise OSError(errno.EACCES, f"{cert_file} / {key_file} were not readable before privileges were "
                                        "dropped (send SIGHUP to reload)")
        return found

    def trust(self, path: str) -> TrustStore | None:
        """The store at `path`; None if the file does not exist (tlshd: the system store)."""
        return self._optional_file(path, self._trust, TrustStore.from_file, "trust store")

    def crls(self, path: str) -> tuple[x509.CertificateRevocationList, ...] | None:
        """The CRLs at `path`; None if the file does not exist (tlshd: no CRL checking)."""
        return self._optional_file(path, self._crls, _crls_of, "CRL file")

    def _optional_file(self, path: str, cache: dict[str, T], loader: Callable[[str], T],
                       what: str) -> T | None:
        """A file whose absence means "not configured": read now, or once frozen, from the
        cache (a path neither loaded nor missing was unreadable before the drop)."""
        if not self.frozen:
            return loader(path) if os.path.exists(path) else None
        with self._lock:
            found = cache.get(path)
        if found is not None:
            return found
        if path in self._missing:
            return None
        raise OSError(errno.EACCES, f"{what} {path} was not readable before privileges were dropped "
                                    "(send SIGHUP to reload)")

    def load(self, config: DaemonConfig) -> None:
        """Read every file `config` names; problems are logged (the handshake that needs the
        file reports them again) and then freeze the cache."""
        self._missing.clear()
        for settings in _x509_settings(config):
            cert_file, key_file = settings.certificate, settings.private_key
            if cert_file and key_file:
                try:
                    self._credentials[cert_file, key_file] = Credentials.from_files(cert_file, key_file)
                except (OSError, ValueError) as exc:
                    log.error("cannot load %s / %s: %s", cert_file, key_file, exc)
            self._load_optional(settings.truststore, self._trust, TrustStore.from_file)
            self._load_optional(settings.crl, self._crls, _crls_of)
        self.frozen = True

    def _load_optional(self, path: str | None, cache: dict[str, T], loader: Callable[[str], T]) -> None:
        if not path:
            return
        if not os.path.exists(path):
            self._missing.add(path)
            return
        try:
            cache[path] = loader(path)
        except (OSError, ValueError) as exc:
            log.error("cannot load %s: %s", path, exc)


# One parse per file version, as for trust stores.
_crls_of = ParsedFiles(load_crls, maxsize=16)


def _x509_settings(config: DaemonConfig) -> Iterator[X509Settings]:
    yield config.client
    yield config.server
    for group in config.alpn:
        yield config.server_x509(group.alpn, group.sni)


FILES = FileCache()


def import_package(package: ModuleType, skip: Callable[[str], bool] = lambda name: False) -> None:
    """Import every module of `package` now, while its files are readable."""
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not skip(info.name):
            importlib.import_module(info.name)


def warm_up() -> None:
    """Load, by using them, the modules a handshake imports lazily (see the module text)."""
    import quichsd

    # Every module of ours (some are imported lazily, e.g. a socket backend on first use),
    # then the outside modules we know to be imported lazily.
    import_package(quichsd, lambda name: name.endswith("__main__"))
    for name in _LAZY_MODULES:
        importlib.import_module(name)
    from ..demo import converse
    from ..devcerts import NOW, make_ca, new_key
    from ..tls.client import ClientEngine
    from ..tls.config import ClientAuth, ExternalPsk, TlsConfig
    from ..tls.events import HandshakeComplete, SessionTicketReceived
    from ..tls.server import ServerEngine

    ca = make_ca("quichsd warm-up CA")
    key = new_key("p256")
    creds = Credentials([ca.issue("localhost", key)], key)
    trust = TrustStore.from_certificates([ca.cert], "warm-up")
    alpn = [b"warm-up"]
    ticket_key = os.urandom(64)
    server = TlsConfig(alpn_protocols=alpn, credentials=creds, trust=trust, client_auth=ClientAuth.REQUIRED,
                       session_ticket_key=ticket_key)
    client = TlsConfig(alpn_protocols=alpn, server_name="localhost", credentials=creds, trust=trust)
    now = NOW.timestamp() + 60
    session = None
    for _who, event in converse(ClientEngine(client), ServerEngine(server), now):
        if isinstance(event, SessionTicketReceived):
            session = event.session
    if session is None:
        raise RuntimeError("warm-up handshake issued no ticket")
    resumed = TlsConfig(alpn_protocols=alpn, server_name="localhost", trust=trust, session=session)
    done = [e for _, e in converse(ClientEngine(resumed), ServerEngine(server), now)
            if isinstance(e, HandshakeComplete)]
    psk = [ExternalPsk(b"warm-up", bytes(32))]
    done += [e for _, e in converse(ClientEngine(TlsConfig(alpn_protocols=alpn, psks=psk)),
                                    ServerEngine(TlsConfig(alpn_protocols=alpn, psks=psk)), now)
             if isinstance(e, HandshakeComplete)]
    if len(done) != 4:
        raise RuntimeError(f"warm-up handshakes did not complete ({len(done)} of 4 sides)")


def prepare_for_drop(config: DaemonConfig) -> None:
    """Everything a worker must do while still root (see the module text)."""
    warm_up()
    FILES.load(config)
