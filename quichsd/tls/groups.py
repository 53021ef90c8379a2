"""Key exchange for the key_share extension (RFC 8446 §4.2.7, §4.2.8, §7.4) and the
hybrid X25519MLKEM768 group (draft-ietf-tls-ecdhe-mlkem).

Client side: client_key_share(group) makes the share for the ClientHello, and its
exchange(server_share) turns the ServerHello's share into the (EC)DHE input of the key
schedule. Server side: server_key_exchange(group, client_share) does both halves at once.
Every malformed peer share raises TlsError(illegal_parameter); nothing asserts.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .constants import NamedGroup
from .errors import illegal_parameter

# Preference order: what the engine offers first and prefers when choosing (DESIGN §4).
SUPPORTED_GROUPS: tuple[NamedGroup, ...] = (
    NamedGroup.X25519,
    NamedGroup.SECP256R1,
    NamedGroup.SECP384R1,
    NamedGroup.X25519MLKEM768,
)

X25519_LEN = 32
MLKEM768_ENCAPSULATION_KEY_LEN = 1184  # FIPS 203 §8, ek size for ML-KEM-768
MLKEM768_CIPHERTEXT_LEN = 1088  # FIPS 203 §8, c size for ML-KEM-768

_ECDH = ec.ECDH()
# RFC 8446 §4.2.8.2: UncompressedPointRepresentation, legacy_form 4, then X and Y.
_EC_CURVES: dict[NamedGroup, tuple[ec.EllipticCurve, int]] = {
    NamedGroup.SECP256R1: (ec.SECP256R1(), 1 + 2 * 32),
    NamedGroup.SECP384R1: (ec.SECP384R1(), 1 + 2 * 48),
}

ClassicPrivateKey: TypeAlias = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
# (private key, public key_exchange bytes) of X25519, secp256r1 or secp384r1.
KeyPair: TypeAlias = tuple[ClassicPrivateKey, bytes]
_Private: TypeAlias = ClassicPrivateKey | tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]


# --- ephemeral keys made ahead ----------------------------------------------------------


class KeySource(Protocol):
    """Where an engine takes its ephemeral (EC)DH key pairs (TlsConfig.ephemeral_keys)."""

    def take(self, group: NamedGroup) -> KeyPair:
        """A pair no other handshake gets, for X25519, secp256r1 or secp384r1."""
        ...


def new_key_pair(group: NamedGroup) -> KeyPair:
    """A pair made now: what an engine uses when its configuration names no KeySource."""
    return _EPHEMERAL_MAKERS[group]()


class EphemeralKeyPool:
    """Ephemeral (EC)DH key pairs made ahead of need, in a handshake's idle time (while it
    waits for the peer), so the next handshake's key share costs no key generation on its
    critical path. Each pair is handed out once and then forgotten, so every handshake
    still has its own ephemeral key (RFC 8446 §4.2.8); in a forked child a pool starts
    empty, so no pair can be shared by two processes. Only groups this pool has handed out
    are made ahead, one pair each. The driver keeps one per process (quichsd/handshake.py)
    and passes it to the engines in their TlsConfig."""

    def __init__(self) -> None:
        self._forget()

    def _forget(self) -> None:
        # A new lock too: in a forked child, another thread of the parent may have held
        # the old one when it forked.
        self._pid = os.getpid()
        self._ready: dict[NamedGroup, KeyPair] = {}
        self._used: set[NamedGroup] = set()
        self._lock = threading.Lock()

    def take(self, group: NamedGroup) -> KeyPair:
        """(private key, public key_exchange bytes) for X25519, secp256r1 or secp384r1."""
        if self._pid != os.getpid():
            self._forget()
        with self._lock:
            self._used.add(group)
            ready = self._ready.pop(group, None)
        return ready if ready is not None else new_key_pair(group)

    def refill(self) -> None:
        """Make one pair for each used group that has none ready (call when idle)."""
        if self._pid != os.getpid():
            self._forget()
        with self._lock:
            missing = [g for g in self._used if g not in self._ready]
        for group in missing:
            pair = new_key_pair(group)
            with self._lock:
                self._ready.setdefault(group, pair)


def _make_x25519() -> KeyPair:
    private = x25519.X25519PrivateKey.generate()
    return private, private.public_key().public_bytes_raw()


def _make_ec(group: NamedGroup) -> Callable[[], KeyPair]:
    curve = _EC_CURVES[group][0]

    def make() -> KeyPair:
        private = ec.generate_private_key(curve)
        return private, ec_public_bytes(private)

    return make


_EPHEMERAL_MAKERS: dict[NamedGroup, Callable[[], KeyPair]] = {
    NamedGroup.X25519: _make_x25519,
    NamedGroup.SECP256R1: _make_ec(NamedGroup.SECP256R1),
    NamedGroup.SECP384R1: _make_ec(NamedGroup.SECP384R1),
}


# --- per-primitive helpers (peer input validated here) ---------------------------------


def _x25519_public(data: bytes) -> x25519.X25519PublicKey:
    if len(data) != X25519_LEN:
        raise illegal_parameter(f"x25519 share of {len(data)} bytes")
    return x25519.X25519PublicKey.from_public_bytes(data)


def _x25519_exchange(private: x25519.X25519PrivateKey, peer: bytes) -> bytes:
    try:
        return private.exchange(_x25519_public(peer))
    except ValueError:
        # RFC 8446 §7.4.2: an all-zero X25519 output (a low-order peer point) MUST abort.
        # OpenSSL refuses to return it; cryptography reports that as ValueError.
        raise illegal_parameter("x25519 shared secret is all zero") from None


def _ec_public(group: NamedGroup, data: bytes) -> ec.EllipticCurvePublicKey:
    curve, length = _EC_CURVES[group]
    # RFC 8446 §4.2.8.2: only the uncompressed form; §4.2.8.2 also requires the peer to
    # validate the point (on the curve, not the identity).
    if len(data) != length or data[0] != 4:
        raise illegal_parameter(f"{group.name} share is not an uncompressed point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, data)
    except ValueError:
        raise illegal_parameter(f"{group.name} share is not on the curve") from None


def _ec_exchange(group: NamedGroup, private: ec.EllipticCurvePrivateKey, peer: bytes) -> bytes:
    # RFC 8446 §7.4.1: the shared secret is the x-coordinate, which is what ECDH returns.
    return private.exchange(_ECDH, _ec_public(group, peer))


def ec_public_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


# X25519MLKEM768, draft-ietf-tls-ecdhe-mlkem §4 (§4.1 client share, §4.2 server share,
# §4.3 shared secret in the -04/-05 numbering). Unlike the SecP*MLKEM* groups, this one
# puts ML-KEM FIRST everywhere despite its name:
#   client share  = ML-KEM-768 encapsulation key (1184) || X25519 public (32)  = 1216
#   server share  = ML-KEM-768 ciphertext (1088)        || X25519 public (32)  = 1120
#   shared secret = ML-KEM shared secret (32)           || X25519 secret (32)  = 64
_HYBRID_CLIENT_LEN = MLKEM768_ENCAPSULATION_KEY_LEN + X25519_LEN
_HYBRID_SERVER_LEN = MLKEM768_CIPHERTEXT_LEN + X25519_LEN


def _mlkem_encapsulation_key(data: bytes) -> mlkem.MLKEM768PublicKey:
    try:
        # cryptography runs the FIPS 203 §7.2 encapsulation key check (modulus check).
        return mlkem.MLKEM768PublicKey.from_public_bytes(data)
    except ValueError:
        raise illegal_parameter("invalid ML-KEM-768 encapsulation key") from None


def _hybrid_client_exchange(
    private: tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey], server_share: bytes
) -> bytes:
    if len(server_share) != _HYBRID_SERVER_LEN:
        raise illegal_parameter(f"X25519MLKEM768 server share of {len(server_share)} bytes")
    kem_private, x_private = private
    try:
        # FIPS 203 §7.3 ciphertext type check is the length check above; a well-sized but
        # forged ciphertext yields the implicit-rejection secret, not an error.
        kem_secret = kem_private.decapsulate(server_share[:MLKEM768_CIPHERTEXT_LEN])
    except ValueError:
        raise illegal_parameter("invalid ML-KEM-768 ciphertext") from None
    return kem_secret + _x25519_exchange(x_private, server_share[MLKEM768_CIPHERTEXT_LEN:])


def _hybrid_server_exchange(client_share: bytes) -> tuple[bytes, bytes]:
    if len(client_share) != _HYBRID_CLIENT_LEN:
        raise illegal_parameter(f"X25519MLKEM768 client share of {len(client_share)} bytes")
    ek = _mlkem_encapsulation_key(client_share[:MLKEM768_ENCAPSULATION_KEY_LEN])
    x_private = x25519.X25519PrivateKey.generate()
    x_secret = _x25519_exchange(x_private, client_share[MLKEM768_ENCAPSULATION_KEY_LEN:])
    kem_secret, ciphertext = ek.encapsulate()
    return ciphertext + x_private.public_key().public_bytes_raw(), kem_secret + x_secret


# --- client side ----------------------------------------------------------------------


class ClientKeyShare:
    """One KeyShareEntry the client offered (§4.2.8) and the private half behind it."""

    __slots__ = ("group", "public", "_private")

    def __init__(self, group: NamedGroup, private: _Private, public: bytes) -> None:
        self.group = group
        self.public = public  # key_exchange bytes of the KeyShareEntry
        self._private = private

    @classmethod
    def from_private_key(cls, group: NamedGroup, private: _Private) -> ClientKeyShare:
        """A share around a given private key (test vectors; deterministic replays)."""
        if group == NamedGroup.X25519 and isinstance(private, x25519.X25519PrivateKey):
            return cls(group, private, private.public_key().public_bytes_raw())
        if group in _EC_CURVES and isinstance(private, ec.EllipticCurvePrivateKey):
            if private.curve.name != _EC_CURVES[group][0].name:
                raise illegal_parameter(f"private key is not on {group.name}")
            return cls(group, private, ec_public_bytes(private))
        if group == NamedGroup.X25519MLKEM768 and isinstance(private, tuple):
            kem_private, x_private = private
            public = (
                kem_private.public_key().public_bytes_raw()
                + x_private.public_key().public_bytes_raw()
            )
            return cls(group, private, public)
        raise illegal_parameter(f"private key does not fit group {group!r}")

    def exchange(self, server_share: bytes) -> bytes:
        """The (EC)DHE shared secret from the ServerHello's key_exchange (§7.4)."""
        private = self._private
        if isinstance(private, tuple):
            return _hybrid_client_exchange(private, server_share)
        if isinstance(private, x25519.X25519PrivateKey):
            return _x25519_exchange(private, server_share)
        return _ec_exchange(self.group, private, server_share)


def _new_hybrid() -> ClientKeyShare:  # ML-KEM keys are not pooled
    kem_private = mlkem.MLKEM768PrivateKey.generate()
    x_private = x25519.X25519PrivateKey.generate()
    public = kem_private.public_key().public_bytes_raw() + x_private.public_key().public_bytes_raw()
    return ClientKeyShare(NamedGroup.X25519MLKEM768, (kem_private, x_private), public)


def _take(group: NamedGroup, pool: KeySource | None) -> KeyPair:
    return new_key_pair(group) if pool is None else pool.take(group)


def client_key_share(group: int, pool: KeySource | None = None) -> ClientKeyShare:
    """A fresh ephemeral share for `group`, its classic key from `pool` (None: made now).

    An unsupported group raises illegal_parameter: it can only come from a peer's
    HelloRetryRequest naming a group we did not offer (§4.1.4).
    """
    if group == NamedGroup.X25519MLKEM768:
        return _new_hybrid()
    if group not in _EPHEMERAL_MAKERS:
        raise illegal_parameter(f"unsupported group 0x{int(group):04x}")
    named = NamedGroup(group)
    private, public = _take(named, pool)
    return ClientKeyShare(named, private, public)


# --- server side ----------------------------------------------------------------------


def _agree(private: ClassicPrivateKey, peer: x25519.X25519PublicKey | ec.EllipticCurvePublicKey) -> bytes:
    if isinstance(private, x25519.X25519PrivateKey) and isinstance(peer, x25519.X25519PublicKey):
        try:
            return private.exchange(peer)
        except ValueError:
            raise illegal_parameter("x25519 shared secret is all zero") from None  # §7.4.2
    if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(peer, ec.EllipticCurvePublicKey):
        return private.exchange(_ECDH, peer)
    raise TypeError(f"a {type(private).__name__} cannot agree with a {type(peer).__name__}")


def server_key_share(group: NamedGroup, client_share: bytes,
                     pool: KeySource | None = None) -> tuple[bytes, Callable[[], bytes]] | None:
    """server_key_exchange in two steps, for X25519 and the NIST curves: (server
    key_exchange bytes, a call that computes the shared secret). The client's share is
    validated now, so a malformed one fails before anything is sent; the ServerHello can
    go out while the secret is still to be computed. None for the other groups (the
    hybrid one), which do both at once in server_key_exchange. Keys from `pool` (None:
    made now)."""
    peer: x25519.X25519PublicKey | ec.EllipticCurvePublicKey
    if group == NamedGroup.X25519:
        peer = _x25519_public(client_share)
    elif group in _EC_CURVES:
        peer = _ec_public(group, client_share)
    else:
        return None
    private, public = _take(group, pool)  # after the validation: a bad share spends no key
    return public, lambda: _agree(private, peer)


def server_key_exchange(group: NamedGroup, client_share: bytes,
                        pool: KeySource | None = None) -> tuple[bytes, bytes]:
    """(server key_exchange bytes, shared secret) for the client's share of `group`; keys
    from `pool` (None: made now)."""
    split = server_key_share(group, client_share, pool)
    if split is not None:
        public, secret = split
        return public, secret()
    if group == NamedGroup.X25519MLKEM768:
        return _hybrid_server_exchange(client_share)  # not pooled
    raise illegal_parameter(f"unsupported group 0x{int(group):04x}")
