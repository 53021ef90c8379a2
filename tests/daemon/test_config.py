"""quichsd/daemon/config.py: GKeyFile rules (spec tlshd-behaviour §4.2), tlshd's keys and
defaults (§4.3), quichsd's own groups, load order (§4.1, §9.1) and SIGHUP reload (§2.6)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from quichsd.daemon.config import (
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    AlpnCredentials,
    ConfigError,
    DaemonConfig,
    DebugSettings,
    KeyFile,
    X509Settings,
    default_workers,
    from_keyfile,
    is_key_url,
    load,
    load_file,
    reload,
)


def kf(text: str | bytes) -> KeyFile:
    return KeyFile.parse(text, "test.conf")


def config(text: str | bytes) -> DaemonConfig:
    return from_keyfile(kf(text))


def parse_error(text: str | bytes) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config(text)
    return info.value


# --- GKeyFile: line kinds ---------------------------------------------------------------------


def test_groups_keys_comments_and_blank_lines() -> None:
    f = kf("# top comment\n\n[one]\na=1\n   # indented comment\n \t \n[two]\nb=2\n")
    assert f.groups() == ("one", "two")
    assert f.get_string("one", "a") == "1"
    assert f.get_string("two", "b") == "2"
    assert f.get_string("one", "b") is None
    assert f.get_string("missing", "a") is None


def test_semicolon_is_not_a_comment() -> None:
    assert parse_error("[g]\n; note\n").line == 2
    assert kf("[g]\na=b ; c\n").get_string("g", "a") == "b ; c"


def test_no_inline_comments() -> None:
    assert kf("[g]\na=b # c\n").get_string("g", "a") == "b # c"


@pytest.mark.parametrize(
    "text, line",
    [
        ("[g]\njust words\n", 2),
        ("[g]\n=value\n", 2),  # empty key
        ("[g]\n  = value\n", 2),
        ("[g]\n[unterminated\n", 2),
        ("[g]\n[a] trailing\n", 2),  # only blanks may follow ']'
        ("[g]\n[a]]\n", 2),
        ("[]\n", 1),  # empty group name
        ("[a[b]\n", 1),
        ("[a\x01b]\n", 1),  # control character
        ("\ufeff[g]\n", 1),  # GLib does not skip a BOM
        ("[g]\na]=b\n", 2),
        ("[g]\n[a=b\n", 2),
    ],
)
def test_malformed_lines_name_file_and_line(text: str, line: int) -> None:
    error = parse_error(text)
    assert (error.path, error.line) == ("test.conf", line)
    assert str(error).startswith(f"test.conf:{line}: ")


def test_key_before_any_group_is_an_error() -> None:
    error = parse_error("# comment first is fine\n\nloglevel=1\n[debug]\n")
    assert error.line == 3
    assert "does not start with a group" in str(error)


def test_group_header_with_trailing_blanks_and_leading_indent() -> None:
    f = kf("  [g] \t \na=1\n")
    assert f.groups() == ("g",)


def test_group_names_are_literal() -> None:
    f = kf("[ debug ]\nloglevel=1\n[authenticate.client]\nx=1\n[Desktop Entry]\ny=2\n")
    assert f.groups() == (" debug ", "authenticate.client", "Desktop Entry")
    assert config("[ debug ]\nloglevel=1\n").debug.loglevel == 0  # not [debug]


# --- GKeyFile: whitespace and line endings ------------------------------------------------


def test_whitespace_around_key_and_value() -> None:
    f = kf("[g]\n   key  \t=   value with inner  space   \n")
    assert f.keys("g") == ("key",)
    assert f.get_string("g", "key") == "value with inner  space   "  # trailing kept


def test_spaces_inside_a_key_are_allowed() -> None:
    assert kf("[g]\na b=c\n").get_string("g", "a b") == "c"


def test_crlf_drops_only_the_cr_before_lf() -> None:
    f = kf("[g]\r\na=1\r\nb=x\ry\r\nc=end\r")
    assert f.get_string("g", "a") == "1"
    assert f.get_string("g", "b") == "x\ry"
    assert f.get_string("g", "c") == "end\r"  # no LF follows this CR


def test_empty_value() -> None:
    f = kf("[g]\na=\nb=   \n")
    assert f.get_string("g", "a") == ""
    assert f.get_string("g", "b") == ""  # the blanks are leading whitespace, skipped


# --- GKeyFile: escapes -------------------------------------------------------------------------


def test_escapes() -> None:
    f = kf(r"[g]" "\n" r"a=\sone\ttwo\nthree\rfour\\five\s" "\n")
    assert f.get_string("g", "a") == " one\ttwo\nthree\rfour\\five "


def test_leading_space_via_escape() -> None:
    assert kf("[g]\na=\\s x\n").get_string("g", "a") == "  x"


@pytest.mark.parametrize("value", [r"a\x", r"path\;", "trailing\\"])
def test_bad_escapes_raise_with_file_line_key(value: str) -> None:
    f = kf(f"[g]\n\na={value}\n")
    with pytest.raises(ConfigError) as info:
        f.get_string("g", "a")
    assert (info.value.line, info.value.group, info.value.key) == (3, "g", "a")
    assert str(info.value).startswith("test.conf:3: [g] a: ")


def test_values_are_decoded_lazily() -> None:
    f = kf("[g]\nbad=\\q\n")  # loads: GLib decodes a value only when it is read
    assert f.raw("g", "bad").text == "\\q"  # type: ignore[union-attr]


# --- GKeyFile: lists ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("a;b;c", ("a", "b", "c")),
        ("a;b;", ("a", "b")),  # one trailing separator allowed
        ("a;;b", ("a", "", "b")),
        ("a; b ;c", ("a", " b ", "c")),  # elements are not trimmed
        (r"a\;b;c", ("a;b", "c")),
        (r"a\\;b", ("a\\", "b")),
        (r"\s;x", (" ", "x")),
        ("", ()),
        (";", ("",)),
        ("single", ("single",)),
    ],
)
def test_lists(value: str, expected: tuple[str, ...]) -> None:
    assert kf(f"[g]\nl={value}\n").get_string_list("g", "l") == expected


def test_list_with_invalid_escape() -> None:
    with pytest.raises(ConfigError):
        kf("[g]\nl=a;\\x\n").get_string_list("g", "l")


# --- GKeyFile: integers and booleans ---------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [("42", 42), ("+7", 7), ("-3", -3), ("0", 0), ("12   ", 12), ("12 abc", 12), ("2147483647", 2**31 - 1)],
)
def test_integers(value: str, expected: int) -> None:
    assert kf(f"[g]\nn={value}\n").get_integer("g", "n") == expected


@pytest.mark.parametrize("value", ["", "abc", "0x10", "4.5", "1_000", "2147483648", "-2147483649", "\\s1",
                                   "٣"])
def test_bad_integers(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        kf(f"[g]\nn={value}\n").get_integer("g", "n")
    assert info.value.line == 2 and info.value.key == "n"


@pytest.mark.parametrize(
    "value, expected", [("true", True), ("false", False), ("1", True), ("0", False), ("true \t", True)]
)
def test_booleans(value: str, expected: bool) -> None:
    assert kf(f"[g]\nb={value}\n").get_boolean("g", "b") is expected


@pytest.mark.parametrize("value", ["True", "yes", "on", "tru", "true x", "01", ""])
def test_bad_booleans(value: str) -> None:
    with pytest.raises(ConfigError):
        kf(f"[g]\nb={value}\n").get_boolean("g", "b")


# --- GKeyFile: keys, repeats, locales, encoding ------------------------------------------------


def test_keys_are_case_sensitive() -> None:
    f = kf("[debug]\nLogLevel=5\n")
    assert f.get_integer("debug", "loglevel") is None
    assert config("[debug]\nLogLevel=5\n").debug.loglevel == 0
    assert config("[Debug]\nloglevel=5\n").debug.loglevel == 0


def test_duplicate_key_last_wins() -> None:
    f = kf("[g]\na=1\na=2\n")
    assert f.get_string("g", "a") == "2"
    assert f.raw("g", "a").line == 3  # type: ignore[union-attr]


def test_duplicate_groups_merge() -> None:
    f = kf("[g]\na=1\nb=1\n[h]\nx=0\n[g]\nb=2\nc=3\n")
    assert f.groups() == ("g", "h")
    assert [f.get_string("g", k) for k in "abc"] == ["1", "2", "3"]
    assert f.group_line("g") == 1


def test_locale_suffixes_are_ignored() -> None:
    f = kf("[debug]\nloglevel[de]=5\nloglevel[de_DE.UTF-8@euro]=6\nloglevel=1\n")
    assert f.keys("debug") == ("loglevel",)
    assert config("[debug]\nloglevel[C]=5\n").debug.loglevel == 0


@pytest.mark.parametrize("key", ["a[de", "a[d e]", "a[de]x", "a [de]", "a[de][fr]"])
def test_invalid_key_names(key: str) -> None:
    assert parse_error(f"[g]\n{key}=1\n").line == 2


def test_encoding_key_in_the_first_group() -> None:
    assert kf("[g]\nEncoding=UTF-8\n").get_string("g", "Encoding") == "UTF-8"
    assert kf("[g]\nEncoding=utf-8\n").has_group("g")
    assert parse_error("[g]\nEncoding=ISO-8859-1\n").line == 2
    assert kf("[g]\n[h]\nEncoding=ISO-8859-1\n").has_group("h")  # only the first group counts


def test_invalid_utf8_fails_when_the_value_is_read() -> None:
    data = b"# comment \xff is fine\n[authenticate.client]\nx509.certificate=/etc/\xffcert.pem\n"
    f = kf(data)
    with pytest.raises(ConfigError) as info:
        f.get_string("authenticate.client", "x509.certificate")
    assert info.value.line == 3
    assert "UTF-8" in str(info.value)
    assert parse_error(data).key == "x509.certificate"
    assert config(b"[other]\nk=\xff\n") == DaemonConfig()  # unread keys don't matter


def test_nul_ends_the_line() -> None:
    assert kf(b"[g]\na=one\x00two\n").get_string("g", "a") == "one"


# --- tlshd's model (§4.3) ----------------------------------------------------------------------

# Modelled on the spec's example: the shipped /etc/tlshd/config (1.4.0).
SHIPPED = """\
# Configuration file for tlshd
#
[debug]
loglevel=0
tls=0
nl=0

[authenticate]
#keyrings= <keyring>;<keyring>;<keyring>

[authenticate.client]
#x509.truststore= <pathname>
#x509.crl= <pathname>
#x509.certificate= <pathname>
#x509.private_key= <pathname>
#x509.pq.certificate= <pathname>
#x509.pq.private_key= <pathname>

[authenticate.server]
#x509.truststore= <pathname>
#x509.crl= <pathname>
#x509.certificate= <pathname>
#x509.private_key= <pathname>
#x509.pq.certificate= <pathname>
#x509.pq.private_key= <pathname>
"""

# A site configuration in the shape of the NFS mTLS acceptance test (§8).
SITE = """\
[debug]
loglevel = 1
tls = 4
nl = 2
delay_done = 3

[authenticate]
keyrings = nfs-tls;nvme-extra;

[authenticate.client]
x509.truststore = /etc/tlshd/ca.pem
x509.crl = /etc/tlshd/ca.crl
x509.certificate = /etc/tlshd/client.pem
x509.private_key = /etc/tlshd/client.key

[authenticate.server]
x509.truststore = /etc/tlshd/ca.pem
x509.crl = /etc/tlshd/ca.crl
x509.certificate = /etc/tlshd/server.pem
x509.private_key = pkcs11:token=nfs;object=server
x509.pq.certificate = /etc/tlshd/server-mldsa.pem
x509.pq.private_key = /etc/tlshd/server-mldsa.key

# tlshd ignores this group; quichsd reads it
[quichsd]
workers = 8
dbus = none
keylog = /run/quichsd/keys.log
default_timeout = 12.5

[alpn:smb]
certificate = /etc/quichsd/smb.pem
private_key = /etc/quichsd/smb.key

[alpn:smb sni:fs.example]
truststore = /etc/quichsd/fs-clients.pem
"""


def test_empty_file_gives_every_default() -> None:
    cfg = config("")
    assert cfg == DaemonConfig()
    assert cfg.debug == DebugSettings(loglevel=0, tls=0, nl=0, delay_done=0)
    assert cfg.keyrings == ()
    assert cfg.client == cfg.server == X509Settings()
    assert cfg.server.truststore is None and cfg.server.crl is None
    assert cfg.workers == default_workers() >= 1
    assert (cfg.dbus, cfg.keylog, cfg.default_timeout, cfg.alpn) == ("system", None, DEFAULT_TIMEOUT, ())


def test_shipped_file_gives_the_defaults() -> None:
    assert config(SHIPPED) == DaemonConfig()


def test_site_file() -> None:
    cfg = config(SITE)
    assert cfg.debug == DebugSettings(loglevel=1, tls=4, nl=2, delay_done=3)
    assert cfg.keyrings == ("nfs-tls", "nvme-extra")
    assert cfg.client == X509Settings(
        truststore="/etc/tlshd/ca.pem",
        crl="/etc/tlshd/ca.crl",
        certificate="/etc/tlshd/client.pem",
        private_key="/etc/tlshd/client.key",
    )
    assert cfg.server.private_key == "pkcs11:token=nfs;object=server"  # ';' is plain in a string
    assert cfg.server.pq_certificate == "/etc/tlshd/server-mldsa.pem"
    assert (cfg.workers, cfg.dbus, cfg.keylog, cfg.default_timeout) == (
        8, "none", "/run/quichsd/keys.log", 12.5)
    assert cfg.alpn == (
        AlpnCredentials(b"smb", None, "/etc/quichsd/smb.pem", "/etc/quichsd/smb.key", None),
        AlpnCredentials(b"smb", "fs.example", None, None, "/etc/quichsd/fs-clients.pem"),
    )


def _get(cfg: DaemonConfig, attr: str) -> Any:
    value: Any = cfg
    for part in attr.split("."):
        value = getattr(value, part)
    return value


X509_KEYS = [
    ("x509.truststore", "truststore"),
    ("x509.crl", "crl"),
    ("x509.certificate", "certificate"),
    ("x509.private_key", "private_key"),
    ("x509.pq.certificate", "pq_certificate"),
    ("x509.pq.private_key", "pq_private_key"),
]
EVERY_KEY = [
    ("debug", "loglevel", "5", "debug.loglevel", 0, 5),
    ("debug", "tls", "9", "debug.tls", 0, 9),
    ("debug", "nl", "7", "debug.nl", 0, 7),
    ("debug", "delay_done", "-2", "debug.delay_done", 0, -2),  # kept raw; <= 0 means no delay
    ("authenticate", "keyrings", "a;b", "keyrings", (), ("a", "b")),
] + [
    (f"authenticate.{side}", key, f"/p/{side}/{attr}", f"{side}.{attr}", None, f"/p/{side}/{attr}")
    for side in ("client", "server")
    for key, attr in X509_KEYS
]


@pytest.mark.parametrize("group, key, text, attr, default, value", EVERY_KEY, ids=lambda v: str(v))
def test_every_tlshd_key(group: str, key: str, text: str, attr: str, default: Any, value: Any) -> None:
    assert _get(config(f"[{group}]\n"), attr) == default
    cfg = config(f"[{group}]\n{key}={text}\n")
    assert _get(cfg, attr) == value
    # the key sets nothing else
    assert {a for g, k, t, a, d, v in EVERY_KEY if _get(cfg, a) != d} == {attr}


@pytest.mark.parametrize("value", ["yes", "", "0x1f", "1.5", "99999999999"])
def test_unparsable_tlshd_integers_count_as_zero(value: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "quichsd.daemon.config"):
        assert config(f"[debug]\nloglevel={value}\ntls=3\n").debug == DebugSettings(tls=3)
    assert "test.conf:2: [debug] loglevel" in caplog.text


def test_keyrings_follow_glib_list_rules() -> None:
    assert config("[authenticate]\nkeyrings=a; b;c\\;d;\n").keyrings == ("a", " b", "c;d")
    assert config("[authenticate]\nkeyrings=\n").keyrings == ()


def test_paths_keep_trailing_whitespace() -> None:
    cfg = config("[authenticate.server]\nx509.certificate = /etc/cert.pem  \n")
    assert cfg.server.certificate == "/etc/cert.pem  "


def test_path_with_a_bad_escape_is_a_config_error() -> None:
    error = parse_error("[debug]\n[authenticate.client]\nx509.truststore=C:\\ca.pem\n")
    assert (error.line, error.group, error.key) == (3, "authenticate.client", "x509.truststore")
    assert str(error).startswith("test.conf:3: [authenticate.client] x509.truststore: ")


def test_unknown_groups_and_keys_are_ignored_silently(caplog: pytest.LogCaptureFixture) -> None:
    text = "[debug]\nloglevel=1\nverbose=yes\n[authenticate.server]\nx509.cert=/x\n[session]\nk=\\q\n"
    with caplog.at_level(logging.DEBUG, "quichsd.daemon.config"):
        cfg = config(text)
    assert cfg == DaemonConfig(debug=DebugSettings(loglevel=1))
    assert caplog.text == ""


@pytest.mark.parametrize(
    "value, url",
    [
        ("pkcs11:token=a;object=b", True),
        ("tpmkey:file=/k", True),
        ("a+b.c-d:x", True),
        ("/etc/key.pem", False),
        ("./pkcs11:x", False),
        ("1abc:x", False),
        ("key.pem", False),
    ],
)
def test_key_urls(value: str, url: bool) -> None:
    assert is_key_url(value) is url


# --- [quichsd] ----------------------------------------------------------------------------------


def test_quichsd_defaults_and_values() -> None:
    cfg = config("[quichsd]\n")
    assert (cfg.workers, cfg.dbus, cfg.keylog, cfg.default_timeout) == (
        default_workers(), "system", None, 40.0)
    for dbus in ("none", "system", "session"):
        assert config(f"[quichsd]\ndbus={dbus}\n").dbus == dbus
    assert config("[quichsd]\nworkers=1\n").workers == 1
    assert config("[quichsd]\nkeylog=\n").keylog is None
    assert config("[quichsd]\nkeylog=/tmp/k\\slog\n").keylog == "/tmp/k log"
    assert config("[quichsd]\ndefault_timeout=30\n").default_timeout == 30.0
    assert config("[quichsd]\ndefault_timeout=.5 \n").default_timeout == 0.5
    assert config("[quichsd]\ndefault_timeout=4294967.295\n").default_timeout == MAX_TIMEOUT


@pytest.mark.parametrize(
    "key, value",
    [
        ("workers", "0"),
        ("workers", "-1"),
        ("workers", "many"),
        ("workers", ""),
        ("dbus", "System"),
        ("dbus", "user"),
        ("dbus", ""),
        ("default_timeout", "0"),
        ("default_timeout", "-1"),
        ("default_timeout", "inf"),
        ("default_timeout", "nan"),
        ("default_timeout", "1_0"),
        ("default_timeout", "10s"),
        ("default_timeout", ""),
        ("default_timeout", "4294968"),
        ("keylog", "\\x"),
    ],
)
def test_quichsd_bad_values(key: str, value: str) -> None:
    error = parse_error(f"[quichsd]\n# c\n{key}={value}\n")
    assert (error.path, error.line, error.group, error.key) == ("test.conf", 3, "quichsd", key)
    assert str(error).startswith(f"test.conf:3: [quichsd] {key}: ")


def test_quichsd_unknown_key_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "quichsd.daemon.config"):
        assert config("[quichsd]\nworker=4\n").workers == default_workers()
    assert "test.conf:2: [quichsd] unknown key 'worker'" in caplog.text


# --- per-ALPN groups ------------------------------------------------------------------------------

ALPN = """\
[authenticate.server]
x509.truststore=/base/ca.pem
x509.crl=/base/ca.crl
x509.certificate=/base/cert.pem
x509.private_key=/base/key.pem
x509.pq.certificate=/base/pq.pem
x509.pq.private_key=/base/pq.key

[alpn:smb]
certificate=/smb/cert.pem
private_key=/smb/key.pem
truststore=/smb/ca.pem

[alpn:smb sni:fs.example]
certificate=/fs/cert.pem
private_key=/fs/key.pem

[alpn:h3 sni:www.example]
truststore=/www/ca.pem
"""


def test_alpn_resolution_order() -> None:
    cfg = config(ALPN)
    base = cfg.server
    assert cfg.server_x509() == base
    assert cfg.server_x509(b"nfs", "fs.example") == base  # no group for this ALPN
    smb = cfg.server_x509(b"smb")
    assert smb == X509Settings("/smb/ca.pem", "/base/ca.crl", "/smb/cert.pem", "/smb/key.pem", None, None)
    assert cfg.server_x509("smb", "other.example") == smb
    fs = cfg.server_x509("smb", "FS.Example.")
    # certificate from the exact group, truststore from [alpn:smb], CRL from the base
    assert fs == X509Settings("/smb/ca.pem", "/base/ca.crl", "/fs/cert.pem", "/fs/key.pem", None, None)
    # a truststore-only group keeps the base certificate, including its PQ pair
    www = cfg.server_x509(b"h3", "www.example")
    assert www == replace_truststore(base, "/www/ca.pem")
    assert cfg.server_x509(b"h3") == base


def replace_truststore(settings: X509Settings, path: str) -> X509Settings:
    from dataclasses import replace

    return replace(settings, truststore=path)


def test_alpn_groups_normalise_sni() -> None:
    cfg = config("[alpn:smb sni:FS.Example.]\n[alpn:h3   sni:a-b.c]\n[alpn:ünï]\n")
    assert [(e.alpn, e.sni) for e in cfg.alpn] == [(b"smb", "fs.example"), (b"h3", "a-b.c"),
                                                   ("ünï".encode(), None)]


@pytest.mark.parametrize(
    "group",
    [
        "alpn:",
        "alpn: smb",
        "alpn:smb sni:",
        "alpn:smb sni:bad_host",
        "alpn:smb sni:-a.example",
        "alpn:smb sni:a..b",
        "alpn:smb host:x",
        "alpn:smb sni:a sni:b",
        "alpn:" + "x" * 256,
    ],
)
def test_alpn_bad_group_names(group: str) -> None:
    error = parse_error(f"[debug]\n[{group}]\n")
    assert (error.line, error.group) == (2, group)


def test_alpn_duplicates_after_normalisation() -> None:
    error = parse_error("[alpn:smb sni:fs.example]\n[alpn:smb sni:FS.example.]\n")
    assert error.line == 2 and "line 1" in error.message


@pytest.mark.parametrize(
    "body, key, line",
    [
        ("certificate=/c\n", "private_key", 1),
        ("private_key=/k\n", "certificate", 1),
        ("certificate=/c\nprivate_key=\n", "private_key", 3),
        ("truststore=\n", "truststore", 2),
        ("truststore=\\q\n", "truststore", 2),
    ],
)
def test_alpn_bad_credentials(body: str, key: str, line: int) -> None:
    error = parse_error(f"[alpn:smb]\n{body}")
    assert (error.line, error.group, error.key) == (line, "alpn:smb", key)


def test_alpn_unknown_key_warns_and_other_groups_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "quichsd.daemon.config"):
        cfg = config("[alpn:smb]\ncert=/c\n[alpnsmb]\ncertificate=/x\n")
    assert cfg.alpn == (AlpnCredentials(b"smb"),)
    assert "[alpn:smb] unknown key 'cert'" in caplog.text


# --- load order (§4.1) -----------------------------------------------------------------------------


@pytest.fixture
def etc(tmp_path: Path) -> tuple[Path, Path]:
    """(legacy, default) candidate paths inside tmp_path, not yet created."""
    (tmp_path / "tlshd").mkdir()
    return tmp_path / "tlshd.conf", tmp_path / "tlshd" / "config"


def candidates(etc: tuple[Path, Path]) -> tuple[str, str]:
    return str(etc[0]), str(etc[1])


def test_explicit_path_wins(etc: tuple[Path, Path], tmp_path: Path) -> None:
    legacy, default = etc
    legacy.write_text("[debug]\nloglevel=1\n")
    default.write_text("[debug]\nloglevel=2\n")
    explicit = tmp_path / "my.conf"
    explicit.write_text("[debug]\nloglevel=3\n")
    cfg, path = load(str(explicit), candidates=candidates(etc))
    assert (cfg.debug.loglevel, path) == (3, str(explicit))


def test_explicit_path_must_load(etc: tuple[Path, Path], tmp_path: Path) -> None:
    etc[1].write_text("[debug]\n")
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path / "absent.conf"), candidates=candidates(etc))
    assert info.value.path == str(tmp_path / "absent.conf")
    bad = tmp_path / "bad.conf"
    bad.write_text("[debug]\nnonsense\n")
    with pytest.raises(ConfigError) as info:
        load(str(bad), candidates=candidates(etc))
    assert str(info.value).startswith(f"{bad}:2: ")


def test_overlong_explicit_path() -> None:
    with pytest.raises(ConfigError, match="Invalid config file"):
        load("/" + "a" * 4094)


def test_legacy_file_is_used_with_a_notice(etc: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    legacy, default = etc
    legacy.write_text("[debug]\nloglevel=1\n")
    default.write_text("[debug]\nloglevel=2\n")
    with caplog.at_level(logging.INFO, "quichsd.daemon.config"):
        cfg, path = load(candidates=candidates(etc))
    assert (cfg.debug.loglevel, path) == (1, str(legacy))
    assert f"Please relocate {legacy} to {default}" in caplog.text


def test_default_file_when_legacy_is_absent(etc: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    etc[1].write_text("[debug]\nloglevel=2\n")
    with caplog.at_level(logging.INFO, "quichsd.daemon.config"):
        cfg, path = load(candidates=candidates(etc))
    assert (cfg.debug.loglevel, path) == (2, str(etc[1]))
    assert caplog.text == ""


def test_broken_legacy_file_falls_through(etc: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    legacy, default = etc
    legacy.write_text("[debug]\nbroken line\n")
    default.write_text("[debug]\nloglevel=2\n")
    with caplog.at_level(logging.WARNING, "quichsd.daemon.config"):
        cfg, path = load(candidates=candidates(etc))
    assert path == str(default)
    assert f"{legacy}:2:" in caplog.text


def test_no_file_at_all_is_fatal(etc: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError) as info:
        load(candidates=candidates(etc))
    assert info.value.path == str(etc[1])
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_broken_default_file_is_fatal(etc: tuple[Path, Path]) -> None:
    etc[1].write_text("[debug]\n\n[authenticate]\n[oops\n")
    with pytest.raises(ConfigError) as info:
        load(candidates=candidates(etc))
    assert (info.value.path, info.value.line) == (str(etc[1]), 4)


def test_only_regular_files_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_file(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_file(str(fifo))  # returns at once: a FIFO without a writer must not block


# --- reload (§2.6) ---------------------------------------------------------------------------------


def test_reload_swaps_in_a_good_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config"
    path.write_text("[debug]\nloglevel=1\n")
    current, _ = load(str(path))
    path.write_text("[debug]\nloglevel=2\n[authenticate]\nkeyrings=extra\n")
    with caplog.at_level(logging.INFO, "quichsd.daemon.config"):
        new, error = reload(current, str(path))
    assert error is None
    assert (new.debug.loglevel, new.keyrings) == (2, ("extra",))
    assert f"Reloading configuration from {path}" in caplog.text


@pytest.mark.parametrize(
    "damage",
    [
        "[debug]\nloglevel=2\nnot a pair\n",
        "loglevel=2\n",
        "[quichsd]\nworkers=0\n",
        "[authenticate.server]\nx509.certificate=\\z\n",
        None,  # the file is gone
    ],
)
def test_reload_keeps_the_old_config_on_a_bad_file(
    tmp_path: Path, damage: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config"
    path.write_text("[debug]\nloglevel=1\n")
    current, _ = load(str(path))
    if damage is None:
        path.unlink()
    else:
        path.write_text(damage)
    with caplog.at_level(logging.ERROR, "quichsd.daemon.config"):
        kept, error = reload(current, str(path))
    assert kept is current
    assert isinstance(error, ConfigError) and error.path == str(path)
    if damage is not None:
        assert error.line is not None
    assert "Failed to reload config file: " + str(error) in caplog.text


def test_reload_rereads_the_legacy_path(etc: tuple[Path, Path]) -> None:
    legacy, default = etc
    legacy.write_text("[debug]\nloglevel=1\n")
    default.write_text("[debug]\nloglevel=5\n")
    current, path = load(candidates=candidates(etc))
    legacy.write_text("[debug]\nloglevel=3\n")
    new, error = reload(current, path)
    assert error is None and new.debug.loglevel == 3


# --- inline comments (GKeyFile has none) and the README's own sample --------------------------


@pytest.mark.parametrize(
    "text, group, key",
    [
        ("[quichsd]\nkeylog = /tmp/keys   # for Wireshark\n", "quichsd", "keylog"),
        ("[quichsd]\nworkers = 4\t# four\n", "quichsd", "workers"),
        ("[quichsd]\ndbus = # none\n", "quichsd", "dbus"),
        ("[authenticate.client]\nx509.truststore = /etc/ca.pem # ours\n", "authenticate.client",
         "x509.truststore"),
        ("[debug]\nloglevel = 1 # verbose\n", "debug", "loglevel"),
        ("[alpn:smb]\ncertificate = /c.pem # smb\nprivate_key = /k.pem\n", "alpn:smb", "certificate"),
    ],
)
def test_a_comment_after_a_value_is_refused_and_says_why(text: str, group: str, key: str) -> None:
    """GLib keeps such a comment in the value (tlshd would read a keylog path ending in
    '# for Wireshark') or fails it (an integer): one error naming line, group and key."""
    error = parse_error(text)
    assert (error.line, error.group, error.key) == (2, group, key)
    assert "inline comment" in str(error) and "GKeyFile, and so tlshd, has no inline comments" in str(error)
    assert len(str(error).splitlines()) == 1


def test_a_comment_after_a_group_line_is_refused_and_says_why() -> None:
    error = parse_error("[quichsd]   # our own keys\nworkers = 2\n")
    assert error.line == 1
    assert "group line" in str(error) and "has no inline comments" in str(error)


def test_a_hash_that_is_not_a_comment_stays_in_the_value() -> None:
    """'#' after a non-blank is a plain character (as in GLib); a value that really holds
    ' #' writes its blank as \\s."""
    cfg = config("[quichsd]\nkeylog = /tmp/keys#1\n"
                 "[authenticate.client]\nx509.truststore = /etc/my\\s#2.pem\n")
    assert cfg.keylog == "/tmp/keys#1"
    assert cfg.client.truststore == "/etc/my #2.pem"
    assert config("[other]\nnote = tlshd ignores this group # so do we\n") == config("")


def readme_ini_blocks() -> list[str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = readme.split("```ini\n")[1:]
    return [block.split("```", 1)[0] for block in blocks]


def test_the_readme_config_sample_loads_as_written(tmp_path) -> None:
    blocks = readme_ini_blocks()
    assert blocks, "README.md has no ```ini block"
    for number, block in enumerate(blocks):
        path = tmp_path / f"readme-{number}.conf"
        path.write_text(block)
        cfg = load_file(str(path))  # what `quichsd daemon -c` does with it
        assert isinstance(cfg, DaemonConfig)
    cfg = load_file(str(tmp_path / "readme-0.conf"))
    assert (cfg.workers, cfg.handshakes, cfg.dbus, cfg.user, cfg.default_timeout) == (
        4, 256, "system", "nobody", 40)
    assert cfg.keylog == "/var/tmp/quichsd-keys.log"
    assert [(a.alpn, a.sni, a.certificate) for a in cfg.alpn] == [
        (b"smb", "fs.example", "/etc/quichsd/smb.pem")]


def test_handshakes_per_worker() -> None:
    assert config("").handshakes == 256
    assert config("[quichsd]\nhandshakes = 8\n").handshakes == 8
    for bad in ("0", "-1", "4097", "many"):
        error = parse_error(f"[quichsd]\nhandshakes = {bad}\n")
        assert error.key == "handshakes"
