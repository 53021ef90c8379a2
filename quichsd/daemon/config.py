"""Configuration: tlshd's key file, read the way tlshd 1.4.0 reads it, plus quichsd's own keys.

Where it comes from (spec tlshd-behaviour §4.1, §9.1)
    `load(path)` with `-c PATH` loads PATH, and any failure is fatal. Without `-c` it tries
    the legacy /etc/tlshd.conf first; if that loads, it logs "Please relocate /etc/tlshd.conf
    to /etc/tlshd/config" and uses it. Otherwise /etc/tlshd/config must load. There is no
    built-in fallback: if no file loads, the daemon does not start. `load` returns the
    configuration and the path it came from, and SIGHUP re-reads that same path through
    `reload` (§2.6), which keeps the old configuration when the file is bad.

Syntax (§4.2): GLib GKeyFile, not configparser
    A line is blank, a comment (`#` as its first non-blank character), a group header
    `[name]`, or `key=value`; anything else fails the whole file. There are no inline
    comments, and `;` never starts one. (Unlike tlshd, which would take the comment as part
    of the value, quichsd rejects a key it reads whose value holds " #" or starts with "#",
    and says why; a group line followed by a comment fails in both, ours saying why.) Group
    names are literal (`authenticate.client` is one name), keys are case-sensitive, a
    repeated group continues the earlier one, and a repeated key replaces the earlier value.
    Whitespace around the key and before the value is dropped, but trailing whitespace stays
    in the value. A CR before LF is dropped.
    `key[locale]` translations are checked for syntax and otherwise ignored. Values are
    decoded only when read, as GLib does: escapes `\\s \\n \\t \\r \\\\`; lists split on
    `;` (`\\;` is a literal semicolon, one trailing `;` is allowed, elements are not
    trimmed); integers are decimal and may be followed by whitespace; booleans are
    `true`/`false`/`1`/`0`.

Groups and keys (§4.3). Other groups and keys are ignored silently, as in tlshd.

    [debug]                 loglevel, tls, nl, delay_done: integers, default 0. As in tlshd,
                            a value that is not an integer counts as 0 (and is logged).
    [authenticate]          keyrings: `;`-list of keyring names to link into the session
                            keyring. keyring.link_keyrings always adds .nvme, .nfs, .nfsd.
    [authenticate.client]   x509.truststore, x509.crl, x509.certificate, x509.private_key,
    [authenticate.server]   x509.pq.certificate, x509.pq.private_key: paths, default unset.
                            An unset or missing truststore means the system store, and an
                            unset or missing CRL means no CRL checking. Files are read at
                            every handshake and not checked here. A private key can also
                            be a key URL (see `is_key_url`).

    [quichsd]               quichsd's own keys; tlshd ignores this group.
        workers          handshake workers; default: CPUs this process may run on.
        handshakes       handshakes a worker runs at once, each on a thread; default 256,
                         at most 4096. A request beyond that is answered at once with DONE
                         ETIMEDOUT (a consumer retries it, spec §9.3) rather than queued.
        dbus             none | system | session; default system.
        keylog           NSS key log file (the SSLKEYLOGFILE format); default unset.
                         An empty value also means unset.
        user             the user the workers and the D-Bus process run as once keys and
                         files are read, keeping only CAP_NET_ADMIN (privileges.py);
                         default nobody. `root` (or uid 0) keeps root, as tlshd does. Only
                         applies when started as root. Certificate, key and trust-store
                         files named here are read before the drop, so with a drop a
                         changed file takes effect on reload (SIGHUP), not at the next
                         handshake as in tlshd.
        group            that user's group; default the user's primary group.
        default_timeout  handshake timeout in seconds, used when ACCEPT carries no TIMEOUT.
                         Default 40, for TCP and QUIC alike. 40 s is what tlshd gives the TCP
                         path when TIMEOUT is absent (GnuTLS's default). It is longer than
                         the kernel consumers' own timers (nvme 10 s, SunRPC 20 s), so we
                         never give up on a handshake they still wait for. It is also
                         finite, unlike tlshd's QUIC path, whose 0xFFFFFFFF ms lets a
                         silent peer hold a worker forever (§9.2, §9.5). It must be
                         > 0 and at most 4294967.295 s, the range of the TIMEOUT attribute.

Per-ALPN server credentials
    One server can present a different certificate, or trust different client CAs, for
    each application protocol, and optionally for each SNI name:

        [alpn:smb]                      credentials for ALPN "smb", any server name
        [alpn:smb sni:fs.example]       credentials for ALPN "smb" when SNI is fs.example
        certificate=/etc/quichsd/smb.pem
        private_key=/etc/quichsd/smb.key
        truststore=/etc/quichsd/smb-clients.pem

    The ALPN id is the UTF-8 text after `alpn:`, 1 to 255 bytes. GKeyFile group names can't
    contain `[`, `]` or control characters, so neither can an ALPN id here. The optional
    `sni:NAME` is a DNS name that must match exactly. It is compared in lower case without
    a trailing dot, and wildcards are not supported. Tokens are separated by spaces.
    `certificate` and `private_key` must appear together. `truststore` is the CA bundle
    for verifying client certificates. Every key is optional, and each value must be a
    non-empty path.

    `DaemonConfig.server_x509(alpn, sni)` resolves each part separately, from the most
    specific source that sets it: `[alpn:A sni:S]`, then `[alpn:A]`, then
    `[authenticate.server]`. The certificate and key are one part, the truststore another.
    An ALPN certificate stands for a different server identity, so it also drops the
    `x509.pq.*` pair. The CRL is always taken from `[authenticate.server]`.

    A group whose name starts with `alpn:` but doesn't match this grammar is an error.
    So are two groups that are the same after normalisation (`sni:FS.example.` and
    `sni:fs.example`). An unknown key in `[quichsd]` or in an `[alpn:...]` group gets a
    warning and is otherwise ignored, because tlshd ignores unknown keys.

Errors
    Every problem raises `ConfigError`, whose text names file:line, the group and the key.
    tlshd treats a string whose escapes GLib cannot decode, or whose bytes are not UTF-8,
    as unset. For a known key we raise instead. Silently dropping `x509.truststore` would
    widen trust to the system store, and silently dropping a key path would only move the
    failure to the first handshake. Integers keep tlshd's "unparsable is 0" rule, because
    the spec (§4.2) calls it out.
"""
from __future__ import annotations

import logging
import math
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypedDict, overload

log = logging.getLogger(__name__)

NOTICE = 25  # syslog's LOG_NOTICE, between INFO and WARNING
DEFAULT_HANDSHAKES = 256
MAX_HANDSHAKES = 4096
DEFAULT_USER = "nobody"
logging.addLevelName(NOTICE, "NOTICE")

LEGACY_PATH = "/etc/tlshd.conf"
DEFAULT_PATH = "/etc/tlshd/config"
# Tried in order without -c; every candidate but the last may fail quietly (§4.1).
DEFAULT_CANDIDATES: tuple[str, ...] = (LEGACY_PATH, DEFAULT_PATH)
PATH_MAX = 4096
DEFAULT_TIMEOUT = 40.0
MAX_TIMEOUT = 0xFFFFFFFF / 1000  # seconds; ACCEPT's TIMEOUT is a u32 in milliseconds
DBUS_CHOICES = ("none", "system", "session")

_SPACE = " \t\n\v\f\r"  # g_ascii_isspace
_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_INT_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)(?:[ \t\n\v\f\r]|\Z)")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_KEY_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_DNS_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # gint


class ConfigError(Exception):
    """A configuration file that cannot be used; `str()` is "file:line: [group] key: why"."""

    def __init__(
        self,
        path: str,
        message: str,
        line: int | None = None,
        group: str | None = None,
        key: str | None = None,
    ) -> None:
        self.path, self.message, self.line, self.group, self.key = path, message, line, group, key
        parts = [path if line is None else f"{path}:{line}"]
        if group is not None:
            parts.append(f"[{group}]" if key is None else f"[{group}] {key}")
        super().__init__(": ".join([*parts, message]))


# --- GKeyFile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawValue:
    """A value as it stands in the file, after the leading whitespace; not yet decoded."""

    text: str
    line: int


class KeyFile:
    """A parsed GKeyFile: groups of raw values, decoded by the typed getters on demand.

    `parse` accepts and rejects what GLib's loader does. Getters return None for a missing
    group or key, and raise ConfigError (file:line, group, key) for a value they can't decode.
    """

    def __init__(self, path: str = "<string>") -> None:
        self.path = path
        self._groups: dict[str, dict[str, RawValue]] = {}
        self._group_lines: dict[str, int] = {}
        self._current: str | None = None

    @classmethod
    def parse(cls, data: bytes | str, path: str = "<string>") -> KeyFile:
        # Undecodable bytes survive as lone surrogates; the getters reject them (GLib
        # validates UTF-8 when a value is read, not when the file is loaded).
        text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
        keyfile = cls(path)
        lines = text.split("\n")
        for number, line in enumerate(lines, 1):
            if number < len(lines) and line.endswith("\r"):
                line = line[:-1]  # only a CR that a LF follows
            keyfile._parse_line(line.split("\0", 1)[0], number)  # C strings end at NUL
        keyfile._current = None
        return keyfile

    # parsing, one line at a time

    def _error(self, line: int, message: str, group: str | None = None,
               key: str | None = None) -> ConfigError:
        return ConfigError(self.path, message, line, group, key)

    def _parse_line(self, line: str, number: int) -> None:
        text = line.lstrip(_SPACE)
        if not text or text[0] == "#":
            return
        close = text.find("]")
        if text[0] == "[" and close != -1 and not text[close + 1 :].strip(" \t"):
            self._start_group(text[1:close], number)
        elif text[0] == "[" and close != -1 and text[close + 1 :].lstrip(" \t").startswith("#"):
            # GLib fails this line too (only blanks may follow ']'); say why.
            raise self._error(number, f"group line {_show(text)} has an inline comment: {NO_INLINE_COMMENTS}")
        elif text.find("=") > 0:
            self._add_pair(text, number)
        else:
            raise self._error(number, f"line {_show(text)} is not a key-value pair, group, or comment")

    def _start_group(self, name: str, number: int) -> None:
        if not name or "[" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            raise self._error(number, f"invalid group name {_show(name)}")
        if name not in self._groups:
            self._groups[name] = {}
            self._group_lines[name] = number
        self._current = name

    def _add_pair(self, text: str, number: int) -> None:
        if self._current is None:
            raise self._error(number, "key file does not start with a group")
        key_text, _, value = text.partition("=")
        key = key_text.rstrip(_SPACE)
        value = value.lstrip(_SPACE)
        locale = _key_locale(key)
        if locale is False:
            raise self._error(number, f"invalid key name {_show(key)}", self._current)
        first_group = next(iter(self._groups))
        if self._current == first_group and key == "Encoding" and not _is_utf8_name(value):
            raise self._error(number, f"unsupported encoding {_show(value)}", self._current, key)
        if locale is None:  # translations (key[xx]) are never what tlshd asks for
            self._groups[self._current][key] = RawValue(value, number)

    # reading

    def groups(self) -> tuple[str, ...]:
        return tuple(self._groups)

    def has_group(self, group: str) -> bool:
        return group in self._groups

    def group_line(self, group: str) -> int | None:
        return self._group_lines.get(group)

    def keys(self, group: str) -> tuple[str, ...]:
        return tuple(self._groups.get(group, ()))

    def raw(self, group: str, key: str) -> RawValue | None:
        return self._groups.get(group, {}).get(key)

    def get_string(self, group: str, key: str) -> str | None:
        value = self.raw(group, key)
        if value is None:
            return None
        return self._decode(group, key, value, None)

    def get_string_list(self, group: str, key: str) -> tuple[str, ...] | None:
        value = self.raw(group, key)
        if value is None:
            return None
        return tuple(self._decode(group, key, value, ";"))

    def get_integer(self, group: str, key: str) -> int | None:
        value = self.raw(group, key)
        if value is None:
            return None
        match = _INT_RE.match(value.text)
        if match is None:
            raise self._error(value.line, f"{_show(value.text)} is not an integer", group, key)
        number = int(match.group(1))
        if not _INT_MIN <= number <= _INT_MAX:
            raise self._error(value.line, f"integer value {_show(value.text)} out of range", group, key)
        return number

    def get_boolean(self, group: str, key: str) -> bool | None:
        value = self.raw(group, key)
        if value is None:
            return None
        word = value.text.rstrip(_SPACE)
        if word in ("true", "1"):
            return True
        if word in ("false", "0"):
            return False
        raise self._error(value.line, f"{_show(value.text)} is not a boolean", group, key)

    @overload
    def _decode(self, group: str, key: str, value: RawValue, separator: None) -> str: ...

    @overload
    def _decode(self, group: str, key: str, value: RawValue, separator: str) -> list[str]: ...

    def _decode(self, group: str, key: str, value: RawValue, separator: str | None) -> str | list[str]:
        """The value with GLib's escapes decoded; with a separator, its list elements."""
        try:
            value.text.encode("utf-8")
        except UnicodeEncodeError:
            raise self._error(value.line, "value is not valid UTF-8", group, key) from None
        try:
            return _unescape(value.text, separator)
        except ValueError as exc:
            raise self._error(value.line, str(exc), group, key) from None


def _show(text: str) -> str:
    return repr(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def _is_utf8_name(value: str) -> bool:
    return value.isascii() and value.lower() == "utf-8"


def _key_locale(key: str) -> str | None | bool:
    """The `xx` of `key[xx]`, None for a plain key, False for an invalid key name."""
    end = 0
    while end < len(key) and key[end] not in "=[]":
        end += 1
    if end == 0 or key[0] == " " or key[end - 1] == " ":
        return False
    if end == len(key):
        return None
    if key[end] != "[" or not key.endswith("]"):
        return False
    locale = key[end + 1 : -1]
    if not all(c.isalnum() or c in "-_.@" for c in locale):
        return False
    return locale or None  # "key[]" is a plain key named "key[]", as in GLib


def _unescape(text: str, separator: str | None) -> str | list[str]:
    """Decode GLib escapes; with a separator, split into list elements."""
    out: list[str] = []
    pieces: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise ValueError("escape character at end of value")
            if escaped in _ESCAPES:
                out.append(_ESCAPES[escaped])
            elif escaped == separator:
                out.append(escaped)
            else:
                raise ValueError(f"invalid escape sequence '\\{escaped}'")
        elif char == separator:
            pieces.append("".join(out))
            out.clear()
        else:
            out.append(char)
    if separator is None:
        return "".join(out)
    if out:  # a trailing separator ends the list; it does not add an empty element
        pieces.append("".join(out))
    return pieces


# --- the configuration model -----------------------------------------------------------------


def default_workers() -> int:
    """The CPUs this process may run on (respects affinity and cpusets)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def is_key_url(value: str) -> bool:
    """True if a private-key value is a GnuTLS key URL such as `pkcs11:...` (tlshd HEAD).

    A letter, then letters, digits, `+`, `-` or `.`, up to a `:`. Write `./name:x` to force a path.
    """
    return _KEY_URL_RE.match(value) is not None


@dataclass(frozen=True)
class DebugSettings:
    """[debug]: raw integers as tlshd reads them."""

    loglevel: int = 0  # non-zero: debug logging; above 3 also traces the tag parser
    tls: int = 0  # TLS library log level when non-zero
    nl: int = 0  # netlink debug level
    delay_done: int = 0  # seconds to sleep before DONE; values <= 0 are ignored


@dataclass(frozen=True)
class X509Settings:
    """[authenticate.client] or [authenticate.server]; None means the key is unset."""

    truststore: str | None = None  # None or a missing file: the system trust store
    crl: str | None = None  # None or a missing file: no CRL checking
    certificate: str | None = None  # PEM, up to 10 certificates; a kernel CERT serial wins
    private_key: str | None = None  # PEM path or key URL; a kernel PRIVKEY serial wins
    pq_certificate: str | None = None  # ML-DSA certificate
    pq_private_key: str | None = None


@dataclass(frozen=True)
class AlpnCredentials:
    """One [alpn:ID] or [alpn:ID sni:NAME] group."""

    alpn: bytes
    sni: str | None = None  # lower case, no trailing dot
    certificate: str | None = None
    private_key: str | None = None
    truststore: str | None = None


@dataclass(frozen=True)
class DaemonConfig:
    """One loaded configuration; immutable, so a reload swaps it whole for new requests."""

    debug: DebugSettings = DebugSettings()
    keyrings: tuple[str, ...] = ()  # [authenticate] keyrings, as GLib splits them
    client: X509Settings = X509Settings()
    server: X509Settings = X509Settings()
    workers: int = field(default_factory=default_workers)
    handshakes: int = DEFAULT_HANDSHAKES  # per worker at once; a request over it gets DONE at once
    dbus: str = "system"
    keylog: str | None = None
    user: str = DEFAULT_USER
    group: str | None = None
    default_timeout: float = DEFAULT_TIMEOUT
    alpn: tuple[AlpnCredentials, ...] = ()

    def server_x509(self, alpn: bytes | str | None = None, sni: str | None = None) -> X509Settings:
        """Server credentials for a connection offering `alpn` with server name `sni`."""
        if alpn is None or not self.alpn:
            return self.server
        wanted = alpn.encode() if isinstance(alpn, str) else bytes(alpn)
        host = sni.lower().rstrip(".") if sni else None
        exact = [e for e in self.alpn if e.alpn == wanted and host is not None and e.sni == host]
        sources = exact + [e for e in self.alpn if e.alpn == wanted and e.sni is None]
        result = self.server
        pair = next((e for e in sources if e.certificate is not None), None)
        if pair is not None:
            result = replace(
                result,
                certificate=pair.certificate,
                private_key=pair.private_key,
                pq_certificate=None,
                pq_private_key=None,
            )
        trust = next((e for e in sources if e.truststore is not None), None)
        if trust is not None:
            result = replace(result, truststore=trust.truststore)
        return result


_X509_KEYS = {
    "truststore": "x509.truststore",
    "crl": "x509.crl",
    "certificate": "x509.certificate",
    "private_key": "x509.private_key",
    "pq_certificate": "x509.pq.certificate",
    "pq_private_key": "x509.pq.private_key",
}
_DEBUG_KEYS = ("loglevel", "tls", "nl", "delay_done")
_QUICHSD_KEYS = ("workers", "handshakes", "dbus", "keylog", "default_timeout", "user", "group")
_ALPN_KEYS = ("certificate", "private_key", "truststore")


NO_INLINE_COMMENTS = ("GKeyFile, and so tlshd, has no inline comments (a '#' is a comment only as the "
                      "first character of a line); put the comment on a line of its own")
# ' #' or a '#' first in a value: text the writer meant as a comment. GLib keeps it in the
# value (a path, a keyring name...) or fails the value (an integer); tlshd then uses a path
# ending in the comment without a word. A '#' after anything but a blank (`/etc/a#1.pem`)
# stays a plain character, and a value that really holds " #" writes that blank as `\s`.
_INLINE_COMMENT_RE = re.compile(r"(?:^|[ \t])#")


def from_keyfile(keyfile: KeyFile) -> DaemonConfig:
    """Build the configuration from a parsed file; ConfigError names the offending key."""
    _reject_inline_comments(keyfile)
    return DaemonConfig(
        debug=DebugSettings(**{name: _tlshd_int(keyfile, "debug", name) for name in _DEBUG_KEYS}),
        keyrings=keyfile.get_string_list("authenticate", "keyrings") or (),
        client=_x509(keyfile, "authenticate.client"),
        server=_x509(keyfile, "authenticate.server"),
        alpn=tuple(_alpn_groups(keyfile)),
        **_quichsd(keyfile),
    )


def _reject_inline_comments(keyfile: KeyFile) -> None:
    """Every key we read, checked for a comment written after its value (a deliberate
    difference from tlshd, which takes such a value as it stands)."""
    read: list[tuple[str, Sequence[str]]] = [
        ("debug", _DEBUG_KEYS), ("authenticate", ("keyrings",)),
        ("authenticate.client", tuple(_X509_KEYS.values())),
        ("authenticate.server", tuple(_X509_KEYS.values())), ("quichsd", _QUICHSD_KEYS),
    ]
    read += [(group, _ALPN_KEYS) for group in keyfile.groups() if group.startswith("alpn:")]
    for group, keys in read:
        for key in keys:
            value = keyfile.raw(group, key)
            if value is not None and _INLINE_COMMENT_RE.search(value.text):
                raise _value_error(keyfile, group, key,
                                   f"{_show(value.text)} has an inline comment: {NO_INLINE_COMMENTS}")


def _tlshd_int(keyfile: KeyFile, group: str, key: str) -> int:
    try:
        return keyfile.get_integer(group, key) or 0
    except ConfigError as exc:
        log.warning("%s; using 0", exc)  # g_key_file_get_integer returns 0, tlshd uses it
        return 0


def _x509(keyfile: KeyFile, group: str) -> X509Settings:
    return X509Settings(**{field_: keyfile.get_string(group, key) for field_, key in _X509_KEYS.items()})


class _QuichsdSettings(TypedDict, total=False):
    """The [quichsd] keys a file sets, as DaemonConfig's keyword arguments."""

    workers: int
    handshakes: int
    dbus: str
    keylog: str
    user: str
    group: str
    default_timeout: float


def _quichsd(keyfile: KeyFile) -> _QuichsdSettings:
    group = "quichsd"
    _warn_unknown(keyfile, group, _QUICHSD_KEYS)
    settings: _QuichsdSettings = {}
    workers = keyfile.get_integer(group, "workers")
    if workers is not None:
        if workers < 1:
            raise _value_error(keyfile, group, "workers", "must be at least 1")
        settings["workers"] = workers
    handshakes = keyfile.get_integer(group, "handshakes")
    if handshakes is not None:
        if not 1 <= handshakes <= MAX_HANDSHAKES:
            raise _value_error(keyfile, group, "handshakes", f"must be 1 to {MAX_HANDSHAKES}")
        settings["handshakes"] = handshakes
    dbus = keyfile.get_string(group, "dbus")
    if dbus is not None:
        if dbus not in DBUS_CHOICES:
            choices = ", ".join(DBUS_CHOICES)
            raise _value_error(keyfile, group, "dbus", f"must be one of {choices}, not {_show(dbus)}")
        settings["dbus"] = dbus
    keylog = keyfile.get_string(group, "keylog")
    if keylog:
        settings["keylog"] = keylog
    user = _account_name(keyfile, "user")
    if user is not None:
        settings["user"] = user
    user_group = _account_name(keyfile, "group")
    if user_group is not None:
        settings["group"] = user_group
    timeout = keyfile.raw(group, "default_timeout")
    if timeout is not None:
        settings["default_timeout"] = _timeout(keyfile, timeout.text)
    return settings


def _account_name(keyfile: KeyFile, key: str) -> str | None:
    """[quichsd] user or group, stripped; None when unset."""
    value = keyfile.get_string("quichsd", key)
    if value is None:
        return None
    if not value.strip():
        raise _value_error(keyfile, "quichsd", key, "must not be empty")
    return value.strip()


def _timeout(keyfile: KeyFile, text: str) -> float:
    number = text.rstrip(_SPACE)
    if not _FLOAT_RE.fullmatch(number):
        raise _value_error(keyfile, "quichsd", "default_timeout", f"{_show(text)} is not a number of seconds")
    seconds = float(number)
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT):
        raise _value_error(keyfile, "quichsd", "default_timeout", f"must be > 0 and <= {MAX_TIMEOUT} seconds")
    return seconds


def _alpn_groups(keyfile: KeyFile) -> Iterator[AlpnCredentials]:
    seen: dict[tuple[bytes, str | None], int] = {}
    for group in keyfile.groups():
        if not group.startswith("alpn:"):
            continue
        line = keyfile.group_line(group)
        alpn, sni = _alpn_selector(keyfile, group)
        if (alpn, sni) in seen:
            message = f"same ALPN and SNI as the group at line {seen[alpn, sni]}"
            raise ConfigError(keyfile.path, message, line, group)
        seen[alpn, sni] = line or 0
        _warn_unknown(keyfile, group, _ALPN_KEYS)
        paths = {key: keyfile.get_string(group, key) for key in _ALPN_KEYS}
        for key, path in paths.items():
            if path == "":
                raise _value_error(keyfile, group, key, "empty path")
        if (paths["certificate"] is None) != (paths["private_key"] is None):
            missing = "private_key" if paths["private_key"] is None else "certificate"
            message = "certificate and private_key must be set together"
            raise ConfigError(keyfile.path, message, line, group, missing)
        yield AlpnCredentials(alpn, sni, **paths)


def _alpn_selector(keyfile: KeyFile, group: str) -> tuple[bytes, str | None]:
    def bad(why: str) -> ConfigError:
        message = f"{why}; expected [alpn:ID] or [alpn:ID sni:NAME]"
        return ConfigError(keyfile.path, message, keyfile.group_line(group), group)

    tokens = [token for token in group.split(" ") if token]
    alpn = tokens[0][len("alpn:") :].encode("utf-8", "surrogateescape")
    if not 1 <= len(alpn) <= 255:
        raise bad("the ALPN id must be 1 to 255 bytes")
    if len(tokens) == 1:
        return alpn, None
    if len(tokens) > 2 or not tokens[1].startswith("sni:"):
        raise bad("unexpected text after the ALPN id")
    host = tokens[1][len("sni:") :].lower().rstrip(".")
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels):
        raise bad(f"{_show(tokens[1][4:])} is not a DNS name")
    return alpn, host


def _warn_unknown(keyfile: KeyFile, group: str, known: Sequence[str]) -> None:
    for key in keyfile.keys(group):
        if key not in known:
            value = keyfile.raw(group, key)
            line = value.line if value else None
            log.warning("%s:%s: [%s] unknown key %r ignored", keyfile.path, line, group, key)


def _value_error(keyfile: KeyFile, group: str, key: str, message: str) -> ConfigError:
    value = keyfile.raw(group, key)
    return ConfigError(keyfile.path, message, value.line if value else None, group, key)


# --- loading and reloading -------------------------------------------------------------------


def read_keyfile(path: str) -> KeyFile:
    """Read and parse one file. Like GLib, only a regular file will do."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block us
    except OSError as exc:
        raise ConfigError(path, f"cannot open: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(path, "not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return KeyFile.parse(data, path)


def load_file(path: str) -> DaemonConfig:
    return from_keyfile(read_keyfile(path))


def load(
    path: str | None = None, *, candidates: Sequence[str] = DEFAULT_CANDIDATES
) -> tuple[DaemonConfig, str]:
    """The start-up load (§4.1): `-c PATH`, else the candidates in order. Returns (config, path).

    Every candidate but the last is optional: if it is missing it is skipped silently, as
    tlshd does. If it exists but is broken it is also skipped, with a warning that tlshd does
    not give. The last candidate must load. Any failure raises ConfigError; the daemon
    then logs "Failed to load config file: ..." and exits 1.
    """
    if path is not None:
        if len(os.fsencode(path)) >= PATH_MAX - 1:
            raise ConfigError(path[:64] + "...", "Invalid config file")
        return load_file(path), path
    if not candidates:
        raise ValueError("no configuration candidates")
    *optional, required = candidates
    for candidate in optional:
        try:
            config = load_file(candidate)
        except ConfigError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                log.warning("Ignoring %s: %s", candidate, exc)
            continue
        log.log(NOTICE, "Please relocate %s to %s", candidate, required)
        return config, candidate
    return load_file(required), required


def reload(current: DaemonConfig, path: str) -> tuple[DaemonConfig, ConfigError | None]:
    """SIGHUP (§2.6): re-read `path`. On failure keep `current` and return the error as well.

    Logs tlshd's "Reloading configuration from PATH" and "Failed to reload config file: ...".
    The caller re-applies the new configuration (debug levels, keyring links), then logs
    "Configuration reloaded successfully".
    """
    log.log(NOTICE, "Reloading configuration from %s", path)
    try:
        return load_file(path), None
    except ConfigError as exc:
        log.error("Failed to reload config file: %s", exc)
        return current, exc
