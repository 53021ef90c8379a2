"""quichsd.daemon.keyring against this machine's kernel keyrings (spec tlshd-behaviour §5, §6.4).

Every test runs in a fresh anonymous session keyring joined by the test process (the
`session` fixture), so keys it adds die with that keyring. Keys that must live outside it
(the user keyring, to be *not* possessed) are unlinked at teardown.
"""
from __future__ import annotations

import errno
import functools
import time

import pytest
from cryptography.hazmat.primitives import serialization

from quichsd.daemon import keyring as kr
from quichsd.daemon.keyring import AuthMode, KeyPayloadError, KeyringError
from quichsd.devcerts import leaf, make_ca
from tests.daemon.conftest import needs_keyctl

pytestmark = needs_keyctl

NVME_IDENTITY = "NVMe0R01 nqn.2014-08.org.nvmexpress:uuid:host nqn.2014-08.org.nvmexpress:subsys"
PSK32 = bytes(range(32))


def has_key_type(name: str, payload: bytes = b"x") -> bool:
    """Whether the kernel knows key type `name` (add_key says ENODEV if not)."""
    ring = kr.add_key("keyring", "quichsd-type-probe", None, kr.KEY_SPEC_SESSION_KEYRING)
    try:
        kr.add_key(name, "probe", payload, ring)
    except KeyringError as exc:
        return exc.errno != errno.ENODEV
    finally:
        kr.unlink(ring, kr.KEY_SPEC_SESSION_KEYRING)
    return True


def _listed_in_proc_keys(serial: int) -> bool:
    """Whether /proc/keys still lists the key (False when /proc/keys cannot be read)."""
    try:
        with open("/proc/keys") as f:
            return any(line.split(None, 1)[0] == f"{serial:08x}" for line in f)
    except OSError:
        return False


def _key_gone(serial: int) -> bool:
    """Reading an invalidated key goes ENOKEY (invalid, still linked) -> EACCES (unlinked by the
    collector, so no longer possessed, but not yet destroyed) -> ENOKEY (destroyed). Only the
    last is gone: ENOKEY, no longer a member of the session keyring, and out of /proc/keys."""
    try:
        kr.read(serial)
        return False
    except KeyringError as exc:
        if exc.errno != errno.ENOKEY:
            return False
    return serial not in kr.keyring_members(kr.KEY_SPEC_SESSION_KEYRING) and not _listed_in_proc_keys(serial)


def destroyed_serial() -> int:
    """The serial of a key that existed and is gone (invalidated and garbage-collected)."""
    serial = kr.add_key("user", "short-lived", b"x", kr.KEY_SPEC_SESSION_KEYRING)
    kr.invalidate(serial)
    deadline = time.monotonic() + 10
    while not _key_gone(serial):  # the key collector runs asynchronously: poll, with a deadline
        if time.monotonic() > deadline:
            pytest.fail(f"key {serial} still present 10 s after KEYCTL_INVALIDATE")
        time.sleep(0.005)
    return serial


@functools.cache
def rsa_ca():
    return make_ca("quichsd keyring test CA", kind="rsa")


def der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# ---- reading keys by serial ----------------------------------------------------------------


def test_session_keyring_is_the_joined_one(session: int) -> None:
    assert kr.session_keyring() == session
    assert kr.describe(session).type == "keyring"


def test_user_key_round_trip_and_describe(session: int) -> None:
    serial = kr.add_key("user", "quichsd test key", b"payload", kr.KEY_SPEC_SESSION_KEYRING)
    assert kr.read(serial) == b"payload"
    desc = kr.describe(serial)
    assert (desc.serial, desc.type, desc.uid, desc.description) == (serial, "user", 0, "quichsd test key")
    assert desc.perm & 0x3F000000, "possessor permissions are set by add_key's defaults"


def test_read_sizes_large_payloads(session: int) -> None:
    big = bytes(i % 251 for i in range(20000))
    serial = kr.add_key("user", "big", big, kr.KEY_SPEC_SESSION_KEYRING)
    assert kr.read(serial) == big


def test_read_at_the_first_buffers_edge(session: int) -> None:
    """One call reads what fits the first buffer; one byte more is read again at its size."""
    for size in (1, kr._READ_GUESS - 1, kr._READ_GUESS, kr._READ_GUESS + 1):
        payload = bytes(i % 7 + 1 for i in range(size))
        serial = kr.add_key("user", f"edge {size}", payload, kr.KEY_SPEC_SESSION_KEYRING)
        assert kr.read(serial) == payload


def test_description_with_semicolons_is_kept_whole(session: int) -> None:
    serial = kr.add_key("user", "a;b;c", b"k", kr.KEY_SPEC_SESSION_KEYRING)
    assert kr.describe(serial).description == "a;b;c"


def test_read_psk_from_a_user_key(session: int) -> None:
    serial = kr.add_key("user", NVME_IDENTITY, PSK32, kr.KEY_SPEC_SESSION_KEYRING)
    psk = kr.read_psk(serial)
    assert (psk.serial, psk.type, psk.identity, psk.key) == (serial, "user", NVME_IDENTITY, PSK32)
    assert PSK32.hex() not in repr(psk) and "key=" not in repr(psk)


def test_read_psk_from_a_psk_key(session: int) -> None:
    if not has_key_type("psk", PSK32):
        pytest.skip("kernel has no 'psk' key type (add_key gives ENODEV; it comes with CONFIG_NVME_KEYRING)")
    serial = kr.add_key("psk", NVME_IDENTITY, PSK32, kr.KEY_SPEC_SESSION_KEYRING)
    psk = kr.read_psk(serial)
    assert (psk.type, psk.identity, psk.key) == ("psk", NVME_IDENTITY, PSK32)


def test_read_psk_refuses_a_keyring(session: int) -> None:
    ring = kr.add_key("keyring", "not a psk", None, kr.KEY_SPEC_SESSION_KEYRING)
    with pytest.raises(KeyPayloadError, match="is a keyring"):
        kr.read_psk(ring)


# ---- certificates and private keys (DER payloads) ------------------------------------------


@pytest.mark.parametrize(
    "fmt",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
    ids=["pkcs8", "sec1"],
)
def test_der_certificate_and_key_round_trip(session: int, fmt) -> None:
    cert, key = leaf("p256")
    key_der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
    cert_serial = kr.add_key("user", "quichsd cert", der(cert), kr.KEY_SPEC_SESSION_KEYRING)
    key_serial = kr.add_key("user", "quichsd key", key_der, kr.KEY_SPEC_SESSION_KEYRING)

    assert kr.read_certificate(cert_serial) == cert
    got = kr.read_private_key(key_serial)
    assert got.private_numbers() == key.private_numbers()
    assert got.public_key().public_numbers() == cert.public_key().public_numbers()


def test_certificate_payload_must_be_der(session: int) -> None:
    cert, _ = leaf("p256")
    pem = kr.add_key("user", "pem cert", cert.public_bytes(serialization.Encoding.PEM),
                     kr.KEY_SPEC_SESSION_KEYRING)
    with pytest.raises(KeyPayloadError, match=rf"key {pem} .*not a DER certificate"):
        kr.read_certificate(pem)


def test_private_key_payload_must_be_a_key(session: int) -> None:
    cert, _ = leaf("p256")
    serial = kr.add_key("user", "cert, not key", der(cert), kr.KEY_SPEC_SESSION_KEYRING)
    with pytest.raises(KeyPayloadError, match="not a DER private key"):
        kr.read_private_key(serial)


# ---- error paths ---------------------------------------------------------------------------


def test_destroyed_serial_waits_until_the_key_is_destroyed(session: int) -> None:
    """The helper itself: returning at the first ENOKEY (the invalidated key is still linked
    then) let the next read see EACCES once the collector had unlinked it. Several keys: the
    first read after an invalidation sometimes comes after the collector already ran."""
    for _ in range(5):
        serial = destroyed_serial()
        assert not _listed_in_proc_keys(serial)
        assert serial not in kr.keyring_members(kr.KEY_SPEC_SESSION_KEYRING)
        with pytest.raises(KeyringError) as err:
            kr.read(serial)
        assert err.value.errno == errno.ENOKEY


def test_missing_key_is_enokey(session: int) -> None:
    serial = destroyed_serial()
    for call in (kr.read, kr.describe, kr.read_psk, kr.read_certificate, kr.read_private_key):
        with pytest.raises(KeyringError) as err:
            call(serial)
        assert err.value.errno == errno.ENOKEY
        assert str(serial) in str(err.value) and "ENOKEY" in str(err.value)
        assert "no such key" in str(err.value)


def test_unpossessed_key_is_eacces(session: int, user_keyring_links: list[int]) -> None:
    # Root's user keyring is not reachable from the fresh session keyring, and add_key's
    # default permissions give the owner (as opposed to the possessor) view only.
    serial = kr.add_key("user", "quichsd-test-unpossessed", b"secret", kr.KEY_SPEC_USER_KEYRING)
    user_keyring_links.append(serial)
    with pytest.raises(KeyringError) as err:
        kr.read(serial)
    assert err.value.errno == errno.EACCES
    assert "not possessed" in str(err.value) and "EACCES" in str(err.value)
    # Linking the keyring that holds it into the session keyring makes it possessed, and
    # so readable: the reason tlshd links keyrings in (§5).
    kr.link(kr.KEY_SPEC_USER_KEYRING, session)
    assert kr.read(serial) == b"secret"


def test_unknown_key_type_is_enodev(session: int) -> None:
    with pytest.raises(KeyringError, match="no key type of that name") as err:
        kr.add_key("quichsd-no-such-type", "d", b"x", kr.KEY_SPEC_SESSION_KEYRING)
    assert err.value.errno == errno.ENODEV


# ---- server PSK lookup (§3.4, §6.2) --------------------------------------------------------


def test_server_psk_search_is_recursive_and_quic_falls_back_to_user(session: int) -> None:
    inner = kr.add_key("keyring", "inner", None, kr.KEY_SPEC_SESSION_KEYRING)
    serial = kr.add_key("user", NVME_IDENTITY, PSK32, inner)

    with pytest.raises(KeyringError) as err:
        kr.find_server_psk(NVME_IDENTITY, quic=False)  # TCP: "psk" keys only
    assert err.value.errno == errno.ENOKEY

    psk = kr.find_server_psk(NVME_IDENTITY, quic=True)
    assert (psk.serial, psk.type, psk.key) == (serial, "user", PSK32)

    with pytest.raises(KeyringError) as err:
        kr.find_server_psk("unknown identity", quic=True)
    assert err.value.errno == errno.ENOKEY


def test_server_psk_prefers_psk_type(session: int) -> None:
    if not has_key_type("psk", PSK32):
        pytest.skip("kernel has no 'psk' key type (add_key gives ENODEV; it comes with CONFIG_NVME_KEYRING)")
    kr.add_key("user", NVME_IDENTITY, b"u" * 32, kr.KEY_SPEC_SESSION_KEYRING)
    serial = kr.add_key("psk", NVME_IDENTITY, PSK32, kr.KEY_SPEC_SESSION_KEYRING)
    for quic in (False, True):
        psk = kr.find_server_psk(NVME_IDENTITY, quic=quic)
        assert (psk.serial, psk.type, psk.key) == (serial, "psk", PSK32)


# ---- keyring linking (§5) ------------------------------------------------------------------


def test_keyring_members_link_and_unlink(session: int) -> None:
    ring = kr.add_key("keyring", "per-request", None, kr.KEY_SPEC_SESSION_KEYRING)
    other = kr.add_key("keyring", "elsewhere", None, ring)
    assert kr.keyring_members(session) == [ring]
    kr.link(other, session)
    kr.link(other, session)  # idempotent
    assert sorted(kr.keyring_members(session)) == sorted([ring, other])
    kr.unlink(other, session)
    assert kr.keyring_members(session) == [ring]
    with pytest.raises(KeyringError) as err:
        kr.unlink(other, session)
    assert err.value.errno == errno.ENOENT


def test_find_keyring_in_own_keyrings_uses_request_key(session: int) -> None:
    ring = kr.add_key("keyring", "quichsd-test-reachable", None, kr.KEY_SPEC_SESSION_KEYRING)
    assert kr.find_keyring("quichsd-test-reachable") == ring


def test_link_keyrings_finds_unreachable_ones_through_proc_keys(
    session: int, user_keyring_links: list[int]
) -> None:
    # A keyring outside this process's keyrings, like the kernel's ".nvme": request_key
    # cannot see it, /proc/keys can. Linking it in makes its keys findable by the server.
    # Built in the session keyring (possessed, so writable), given the owner rights the
    # kernel gives ".nvme" (all but setattr), then moved to root's user keyring.
    name = "quichsd-test-admin-ring"
    ring = kr.add_key("keyring", name, None, session)
    psk = kr.add_key("user", NVME_IDENTITY, PSK32, ring)
    kr.setperm(ring, 0x1F1F0000)
    kr.link(ring, kr.KEY_SPEC_USER_KEYRING)
    user_keyring_links.append(ring)
    kr.unlink(ring, session)
    assert kr.keyring_members(session) == []
    assert kr.lib.quichsd_request_key(b"keyring", name.encode(), 0) == -errno.ENOKEY
    with pytest.raises(KeyringError):
        kr.find_server_psk(NVME_IDENTITY, quic=True)

    linked = kr.link_keyrings([name, "quichsd-no-such-keyring"])

    assert list(linked) == [name, "quichsd-no-such-keyring", ".nvme", ".nfs", ".nfsd"]
    assert linked[name] == ring and linked["quichsd-no-such-keyring"] is None
    for std in kr.STANDARD_KEYRINGS:  # present only where nvme/nfs set them up
        assert linked[std] == kr.find_keyring(std)
    assert ring in kr.keyring_members(session)
    assert kr.find_server_psk(NVME_IDENTITY, quic=True).serial == psk


def test_proc_keys_parsing(tmp_path) -> None:
    proc = tmp_path / "keys"
    proc.write_text(
        "13173813 I--Q---     1 perm 39010000     0     0 asymmetri TLS x509 localhost: "
        "X509.rsa 13da0626 []\n"
        "0f1f1534 I--Q---     2 perm 1f3f0000     0 65534 keyring   _uid.0: empty\n"
        "2b75d5a6 I------     1 perm 1f030000     0     0 keyring   .nvme-x: empty\n"
        "2e4281bc I------     1 perm 1f0b0000     0     0 keyring   .nvme: 3\n"
    )
    assert kr._proc_keys_lookup("keyring", ".nvme", proc) == 0x2E4281BC
    assert kr._proc_keys_lookup("keyring", "TLS x509 localhost", proc) is None
    assert kr._proc_keys_lookup("asymmetric", "TLS x509 localhost", proc) == 0x13173813
    assert kr._proc_keys_lookup("keyring", ".nfs", proc) is None
    assert kr._proc_keys_lookup("keyring", ".nfs", tmp_path / "absent") is None


# ---- DONE REMOTE_AUTH (§6.4) ---------------------------------------------------------------


def test_remote_peer_ids_without_keyring_work() -> None:
    chain = [b"leaf", b"ca"]
    assert kr.remote_peer_ids(AuthMode.X509, server=True, quic=True, peer_chain=chain) == [0xFFFFFFFF] * 2
    assert kr.remote_peer_ids(AuthMode.X509, server=True, quic=False, peer_chain=()) == []
    assert kr.remote_peer_ids(AuthMode.PSK, server=False, quic=False, psk_serial=1234) == [1234]
    assert kr.remote_peer_ids(AuthMode.PSK, server=False, quic=True, psk_serial=1234) == []
    assert kr.remote_peer_ids(AuthMode.PSK, server=True, quic=True, psk_serial=99) == [99]
    assert kr.remote_peer_ids(AuthMode.PSK, server=True, quic=False, psk_serial=99) == [99]
    assert kr.remote_peer_ids(AuthMode.UNAUTH, server=False, quic=True, peer_chain=chain) == []
    with pytest.raises(ValueError):
        kr.remote_peer_ids(7, server=False, quic=True)


def test_x509_client_adds_the_server_chain_as_asymmetric_keys(session: int) -> None:
    if not has_key_type("asymmetric", b""):
        pytest.skip("kernel has no 'asymmetric' key type (CONFIG_ASYMMETRIC_KEY_TYPE)")
    # An ECDSA leaf and an RSA CA: both parse in the kernel's x509 parser. (A self-signed
    # ECDSA CA fails its self-signature check there with ENOENT on this kernel, which is
    # exactly the "valid but refused" case that tlshd reports as 0.)
    cert, _ = leaf("p256")
    chain = [der(cert), der(rsa_ca().cert), b"not a certificate"]
    ids = kr.remote_peer_ids(
        AuthMode.X509, server=False, quic=True, peer_chain=chain, peername="peer.example", keyring=session
    )
    assert len(ids) == 3 and ids[2] == 0, "a certificate the kernel refuses is reported as 0"
    assert all(ids[:2]) and ids[0] != ids[1]
    # Same description for each: add_key replaces the link, so the last accepted one stays.
    desc = kr.describe(ids[1])
    assert (desc.type, desc.description) == ("asymmetric", "TLS x509 peer.example")
    assert ids[1] in kr.keyring_members(session)


def test_peer_certificate_goes_to_the_user_keyring_by_default(
    session: int, user_keyring_links: list[int]
) -> None:
    if not has_key_type("asymmetric", b""):
        pytest.skip("kernel has no 'asymmetric' key type (CONFIG_ASYMMETRIC_KEY_TYPE)")
    cert, _ = leaf("p256")
    serial = kr.add_peer_certificate(der(cert), "quichsd-test-peer")
    assert serial
    user_keyring_links.append(serial)
    assert serial in kr.keyring_members(kr.KEY_SPEC_USER_KEYRING)
    assert kr.describe(serial).description == "TLS x509 quichsd-test-peer"
