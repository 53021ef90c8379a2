"""Key exchange groups: RFC 8448 ECDHE vectors, round trips, and every validation alert."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519

from quichsd.tls.constants import AlertDescription, NamedGroup
from quichsd.tls.errors import TlsError
from quichsd.tls.groups import (
    MLKEM768_CIPHERTEXT_LEN,
    MLKEM768_ENCAPSULATION_KEY_LEN,
    SUPPORTED_GROUPS,
    ClientKeyShare,
    EphemeralKeyPool,
    client_key_share,
    server_key_exchange,
    server_key_share,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

# Share sizes on the wire (RFC 8446 §4.2.8.2; draft-ietf-tls-ecdhe-mlkem).
CLIENT_LEN = {
    NamedGroup.X25519: 32,
    NamedGroup.SECP256R1: 65,
    NamedGroup.SECP384R1: 97,
    NamedGroup.X25519MLKEM768: 1184 + 32,
}
SERVER_LEN = {**CLIENT_LEN, NamedGroup.X25519MLKEM768: 1088 + 32}
SECRET_LEN = {
    NamedGroup.X25519: 32,
    NamedGroup.SECP256R1: 32,
    NamedGroup.SECP384R1: 48,
    NamedGroup.X25519MLKEM768: 64,
}

# A low-order X25519 point whose output is all zero (RFC 7748 §6.1 / RFC 8446 §7.4.2).
X25519_ZERO_POINT = bytes(32)
X25519_ORDER_8_POINT = bytes.fromhex(
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
)


def keys(name: str) -> dict[str, str]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    k: dict[str, str] = data["summary"]["keys"]
    k["ecdhe"] = data["summary"]["secrets"]["ecdhe_shared_secret"]
    return k


def expect_alert(alert: AlertDescription, fn: Any, *args: Any) -> TlsError:
    with pytest.raises(TlsError) as info:
        fn(*args)
    assert info.value.alert == alert, info.value
    return info.value


def illegal(fn: Any, *args: Any) -> TlsError:
    return expect_alert(AlertDescription.illegal_parameter, fn, *args)


# --- RFC 8448 vectors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["rfc8448_simple_1rtt", "rfc8448_resumed_0rtt", "rfc8448_client_auth"],
)
def test_rfc8448_x25519(name: str) -> None:
    k = keys(name)
    for me, peer in (("client", "server"), ("server", "client")):
        raw = bytes.fromhex(k[f"{me}_x25519_private"])
        private = x25519.X25519PrivateKey.from_private_bytes(raw)
        share = ClientKeyShare.from_private_key(NamedGroup.X25519, private)
        assert share.public.hex() == k[f"{me}_x25519_public"]
        secret = share.exchange(bytes.fromhex(k[f"{peer}_x25519_public"]))
        assert secret.hex() == k["ecdhe"]


def test_rfc8448_hrr_p256() -> None:
    # §5: after the HelloRetryRequest the exchange is on secp256r1.
    k = keys("rfc8448_hrr")
    for me, peer in (("client", "server"), ("server", "client")):
        scalar = int(k[f"{me}_p256_private"], 16)
        private = ec.derive_private_key(scalar, ec.SECP256R1())
        share = ClientKeyShare.from_private_key(NamedGroup.SECP256R1, private)
        assert share.public.hex() == k[f"{me}_p256_public_uncompressed"]
        secret = share.exchange(bytes.fromhex(k[f"{peer}_p256_public_uncompressed"]))
        assert secret.hex() == k["ecdhe"]


# --- round trips ----------------------------------------------------------------------


def test_supported_groups_order() -> None:
    assert SUPPORTED_GROUPS == (
        NamedGroup.X25519,
        NamedGroup.SECP256R1,
        NamedGroup.SECP384R1,
        NamedGroup.X25519MLKEM768,
    )


@pytest.mark.parametrize("group", SUPPORTED_GROUPS)
def test_round_trip(group: NamedGroup) -> None:
    client = client_key_share(group)
    assert client.group == group
    assert len(client.public) == CLIENT_LEN[group]
    server_share, server_secret = server_key_exchange(group, client.public)
    assert len(server_share) == SERVER_LEN[group]
    assert len(server_secret) == SECRET_LEN[group]
    assert client.exchange(server_share) == server_secret
    # fresh keys every time
    assert client_key_share(group).public != client.public


def test_hybrid_layout_mlkem_first() -> None:
    """draft-ietf-tls-ecdhe-mlkem: ML-KEM part first in both shares and in the secret."""
    kem = mlkem.MLKEM768PrivateKey.generate()
    x = x25519.X25519PrivateKey.generate()
    client = ClientKeyShare.from_private_key(NamedGroup.X25519MLKEM768, (kem, x))
    assert client.public[:1184] == kem.public_key().public_bytes_raw()
    assert client.public[1184:] == x.public_key().public_bytes_raw()
    server_share, secret = server_key_exchange(NamedGroup.X25519MLKEM768, client.public)
    ciphertext, server_x = server_share[:1088], server_share[1088:]
    assert secret[:32] == kem.decapsulate(ciphertext)
    assert secret[32:] == x.exchange(x25519.X25519PublicKey.from_public_bytes(server_x))
    assert client.exchange(server_share) == secret


# --- validation: every failure is illegal_parameter ----------------------------------


@pytest.mark.parametrize("group", SUPPORTED_GROUPS)
@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_length(group: NamedGroup, delta: int) -> None:
    client = client_key_share(group)
    server_share, _ = server_key_exchange(group, client.public)
    bad_client = client.public[: len(client.public) + delta] + b"\x04" * max(delta, 0)
    bad_server = server_share[: len(server_share) + delta] + b"\x04" * max(delta, 0)
    illegal(server_key_exchange, group, bad_client)
    illegal(client.exchange, bad_server)
    illegal(server_key_exchange, group, b"")
    illegal(client.exchange, b"")


@pytest.mark.parametrize("group", [NamedGroup.SECP256R1, NamedGroup.SECP384R1])
def test_ec_point_not_uncompressed(group: NamedGroup) -> None:
    client = client_key_share(group)
    server_share, _ = server_key_exchange(group, client.public)
    coordinate_len = (len(client.public) - 1) // 2
    for first in (0x02, 0x03, 0x06, 0x00):
        illegal(server_key_exchange, group, bytes([first]) + client.public[1:])
        illegal(client.exchange, bytes([first]) + server_share[1:])
    # a compressed point (right form, wrong length for TLS 1.3)
    compressed = bytes([2 + (client.public[-1] & 1)]) + client.public[1 : 1 + coordinate_len]
    illegal(server_key_exchange, group, compressed)
    # the point at infinity's encoding
    illegal(server_key_exchange, group, b"\x00")


@pytest.mark.parametrize("group", [NamedGroup.SECP256R1, NamedGroup.SECP384R1])
def test_ec_point_not_on_curve(group: NamedGroup) -> None:
    client = client_key_share(group)
    server_share, _ = server_key_exchange(group, client.public)
    off_curve_client = client.public[:-1] + bytes([client.public[-1] ^ 1])
    off_curve_server = server_share[:-1] + bytes([server_share[-1] ^ 1])
    err = illegal(server_key_exchange, group, off_curve_client)
    assert "curve" in err.reason
    illegal(client.exchange, off_curve_server)
    # all-zero coordinates are not a point either
    illegal(server_key_exchange, group, b"\x04" + bytes(len(client.public) - 1))


@pytest.mark.parametrize("point", [X25519_ZERO_POINT, X25519_ORDER_8_POINT])
def test_x25519_all_zero_secret(point: bytes) -> None:
    """RFC 8446 §7.4.2: a shared secret of all zeros aborts the handshake."""
    illegal(server_key_exchange, NamedGroup.X25519, point)
    client = client_key_share(NamedGroup.X25519)
    illegal(client.exchange, point)


@pytest.mark.parametrize("point", [X25519_ZERO_POINT, X25519_ORDER_8_POINT])
def test_x25519_all_zero_secret_in_two_steps(point: bytes) -> None:
    """server_key_share: a well-formed low-order point passes the first step (its share
    goes into the ServerHello) and the shared secret then aborts with illegal_parameter."""
    public, secret = server_key_share(NamedGroup.X25519, point)
    assert len(public) == 32
    illegal(secret)


@pytest.mark.parametrize("group", [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1])
def test_server_key_share_in_two_steps_agrees_with_the_client(group) -> None:
    client = client_key_share(group)
    public, secret = server_key_share(group, client.public)
    assert len(public) == SERVER_LEN[group]
    assert secret() == client.exchange(public)
    # a malformed share fails at the first step, before anything is sent
    illegal(server_key_share, group, client.public[:-1])
    assert server_key_share(NamedGroup.X25519MLKEM768,
                            client_key_share(NamedGroup.X25519MLKEM768).public) is None


def test_hybrid_x25519_part_all_zero() -> None:
    client = client_key_share(NamedGroup.X25519MLKEM768)
    server_share, _ = server_key_exchange(NamedGroup.X25519MLKEM768, client.public)
    illegal(
        server_key_exchange,
        NamedGroup.X25519MLKEM768,
        client.public[:MLKEM768_ENCAPSULATION_KEY_LEN] + X25519_ZERO_POINT,
    )
    illegal(client.exchange, server_share[:MLKEM768_CIPHERTEXT_LEN] + X25519_ZERO_POINT)


def test_hybrid_bad_encapsulation_key() -> None:
    """FIPS 203 §7.2 modulus check: coefficients >= q (12-bit 0xFFF) are rejected."""
    client = client_key_share(NamedGroup.X25519MLKEM768)
    bad_ek = b"\xff" * MLKEM768_ENCAPSULATION_KEY_LEN
    err = illegal(server_key_exchange, NamedGroup.X25519MLKEM768, bad_ek + client.public[-32:])
    assert "encapsulation key" in err.reason


def test_hybrid_forged_ciphertext_is_implicit_rejection() -> None:
    # A well-sized but wrong ciphertext is not an error (ML-KEM implicit rejection): the
    # secrets just differ and the Finished check fails later.
    client = client_key_share(NamedGroup.X25519MLKEM768)
    server_share, secret = server_key_exchange(NamedGroup.X25519MLKEM768, client.public)
    forged = bytes([server_share[0] ^ 1]) + server_share[1:]
    assert client.exchange(forged) != secret


@pytest.mark.parametrize("group", [NamedGroup.SECP521R1, NamedGroup.X448, 0x1234])
def test_unsupported_group(group: int) -> None:
    illegal(client_key_share, group)
    illegal(server_key_exchange, group, b"\x00" * 32)


def test_from_private_key_mismatch() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    illegal(ClientKeyShare.from_private_key, NamedGroup.SECP256R1, p384)
    illegal(ClientKeyShare.from_private_key, NamedGroup.X25519, p384)


# --- ephemeral keys made ahead (EphemeralKeyPool) ---------------------------------------


@pytest.mark.parametrize("group", [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1])
def test_pooled_keys_are_handed_out_once(group) -> None:
    pool = EphemeralKeyPool()
    pool.refill()  # nothing used yet: nothing made
    first = pool.take(group)
    pool.refill()
    second = pool.take(group)  # the one made ahead
    third = pool.take(group)  # none ready: made now
    publics = {first[1], second[1], third[1]}
    assert len(publics) == 3


def test_handshakes_use_made_ahead_keys_and_stay_correct() -> None:
    """A share from the pool gives both sides the same secret, and no two handshakes
    (client or server side) ever get the same key."""
    pool = EphemeralKeyPool()
    seen: set[bytes] = set()
    for _ in range(4):
        pool.refill()
        client = client_key_share(NamedGroup.X25519, pool)
        pool.refill()
        server_share, server_secret = server_key_exchange(NamedGroup.X25519, client.public, pool)
        assert client.exchange(server_share) == server_secret
        assert client.public not in seen and server_share not in seen
        seen |= {client.public, server_share}


def test_a_forked_child_does_not_inherit_made_ahead_keys() -> None:
    import os

    pool = EphemeralKeyPool()
    pool.take(NamedGroup.X25519)
    pool.refill()
    parent_next = pool.take(NamedGroup.X25519)[1]
    pool.refill()  # one ready again, in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, pool.take(NamedGroup.X25519)[1])
        finally:
            os._exit(0)
    os.close(write)
    child_key = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    parent_key = pool.take(NamedGroup.X25519)[1]
    assert len(child_key) == 32 and child_key not in (parent_key, parent_next)


class _CountingPool(EphemeralKeyPool):
    """A real pool that also counts what it hands out."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[NamedGroup] = []

    def take(self, group: NamedGroup):  # noqa: ANN201
        self.taken.append(group)
        return super().take(group)


@pytest.mark.parametrize("split_flight", [False, True])
def test_engines_take_their_keys_from_the_pool_in_their_config(split_flight: bool) -> None:
    from tests.tls_pair import run_pair
    from tests.tls_tamper import T, client_cfg, server_cfg

    client_pool, server_pool = _CountingPool(), _CountingPool()
    client, server = run_pair(
        client_cfg(groups=[NamedGroup.SECP256R1], ephemeral_keys=client_pool),
        server_cfg(ephemeral_keys=server_pool, server_hello_first=split_flight), T,
    )
    assert client.complete.group == NamedGroup.SECP256R1
    assert client_pool.taken == [NamedGroup.SECP256R1] and server_pool.taken == [NamedGroup.SECP256R1]
