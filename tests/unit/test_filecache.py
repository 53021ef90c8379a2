"""quichsd.filecache: a file is parsed once per version, again when it changes, and every
file-loading cache (credentials, trust stores, CRLs) goes through it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from quichsd.daemon.preload import FileCache
from quichsd.devcerts import make_ca, make_crl, new_key
from quichsd.filecache import ParsedFiles
from quichsd.tls.certs import TrustStore
from quichsd.tls.config import Credentials


class Counting:
    """A parser that records every path it reads."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def __call__(self, *paths: str | Path) -> tuple[bytes, ...]:
        self.reads.extend(str(p) for p in paths)
        return tuple(Path(p).read_bytes() for p in paths)


def write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_an_unchanged_file_is_parsed_once(tmp_path):
    f = tmp_path / "a"
    write(f, b"one")
    parse = Counting()
    cache = ParsedFiles(parse, maxsize=4)
    first = cache(f)
    assert cache(f) is first and cache(str(f)) == (b"one",)
    assert parse.reads == [str(f)]  # a Path and its str spelling are one key


def test_a_new_mtime_size_or_inode_is_read_again(tmp_path):
    f = tmp_path / "a"
    write(f, b"one", mtime_ns=1_000_000_000)
    parse = Counting()
    cache = ParsedFiles(parse, maxsize=4)
    assert cache(f) == (b"one",)
    write(f, b"two", mtime_ns=2_000_000_000)  # same size, new mtime
    assert cache(f) == (b"two",)
    write(f, b"three", mtime_ns=2_000_000_000)  # same mtime, new size
    assert cache(f) == (b"three",)
    replacement = tmp_path / "b"
    write(replacement, b"four!", mtime_ns=2_000_000_000)  # same mtime and size, new inode
    os.replace(replacement, f)
    assert cache(f) == (b"four!",)
    assert len(parse.reads) == 4


def test_a_repointed_symlink_is_read_again(tmp_path):
    old, new, link = tmp_path / "old", tmp_path / "new", tmp_path / "live"
    write(old, b"old")
    write(new, b"new")
    link.symlink_to(old)
    cache = ParsedFiles(Counting(), maxsize=4)
    assert cache(link) == (b"old",)
    link.unlink()
    link.symlink_to(new)
    assert cache(link) == (b"new",)


def test_the_least_recently_used_version_goes_first(tmp_path):
    files = [tmp_path / name for name in "abc"]
    for f in files:
        write(f, f.name.encode())
    parse = Counting()
    cache = ParsedFiles(parse, maxsize=2)
    cache(files[0])
    cache(files[1])
    cache(files[0])  # a is now the most recent
    cache(files[2])  # evicts b
    assert len(cache) == 2
    cache(files[0])
    assert parse.reads == [str(files[0]), str(files[1]), str(files[2])]
    cache(files[1])
    assert parse.reads[-1] == str(files[1])


def test_failures_are_not_remembered(tmp_path):
    f = tmp_path / "later"
    cache = ParsedFiles(Counting(), maxsize=2)
    with pytest.raises(FileNotFoundError):
        cache(f)
    write(f, b"here")
    assert cache(f) == (b"here",)
    with pytest.raises(ValueError):
        ParsedFiles(Counting(), maxsize=0)


def _key_pem(key) -> bytes:  # noqa: ANN001
    return key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def test_credentials_follow_their_files(tmp_path):
    ca = make_ca("filecache CA")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    key = new_key("p256")
    write(cert_file, ca.issue("first", key).public_bytes(Encoding.PEM))
    write(key_file, _key_pem(key))
    first = Credentials.from_files(cert_file, key_file)
    assert Credentials.from_files(cert_file, key_file) is first
    key2 = new_key("p256")
    write(cert_file, ca.issue("second", key2).public_bytes(Encoding.PEM), mtime_ns=3_000_000_000)
    write(key_file, _key_pem(key2), mtime_ns=3_000_000_000)
    second = Credentials.from_files(cert_file, key_file)
    assert second is not first
    assert second.chain[0].subject.rfc4514_string() == "CN=second"


def test_trust_stores_and_crls_follow_their_files(tmp_path):
    one, two = make_ca("CA one"), make_ca("CA two")
    ca_file, crl_file = tmp_path / "ca.pem", tmp_path / "crl.pem"
    write(ca_file, one.cert.public_bytes(Encoding.PEM))
    write(crl_file, make_crl(one).public_bytes(Encoding.PEM))
    files = FileCache()  # unfrozen: files are read (through the file cache) as tlshd does
    store = files.trust(str(ca_file))
    crls = files.crls(str(crl_file))
    assert store is TrustStore.from_file(ca_file) and files.trust(str(ca_file)) is store
    assert files.crls(str(crl_file)) is crls
    write(ca_file, two.cert.public_bytes(Encoding.PEM), mtime_ns=4_000_000_000)
    write(crl_file, make_crl(two).public_bytes(Encoding.PEM), mtime_ns=4_000_000_000)
    store2 = files.trust(str(ca_file))
    crls2 = files.crls(str(crl_file))
    assert store2 is not None and store2.subjects == frozenset({two.cert.subject})
    assert crls2 is not None and crls2[0].issuer == two.cert.subject
