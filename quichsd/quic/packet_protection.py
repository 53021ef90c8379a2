"""QUIC packet protection (RFC 9001 §5; RFC 9369 §3.3 for v2).

A PacketKey is one direction of one encryption level: AEAD key + IV for the payload
(§5.3) and a header protection key (§5.4), all derived from a traffic secret (§5.1).
The AEAD object, the IV as an int and the AES-ECB encryptor are built once per key, at
its first use or earlier (PacketKey.derive), and reused for every packet.

Packets are handled whole: `protect` takes a header that already ends with the truncated
packet number (its length in the low two bits of the first byte) and, for long headers,
a Length field that counts packet number + payload + tag. `unprotect` takes exactly one
packet (for coalesced long header packets, the caller cuts at Length).
"""
from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from .. import kernel_numbers
from ..hkdf import hkdf_expand, hkdf_expand_label, hkdf_extract, hkdf_label
from .packet_number import decode_packet_number
from .versions import SUPPORTED_VERSIONS, QuicVersion

__all__ = [
    "AES_128_GCM",
    "AES_256_GCM",
    "AES_128_CCM",
    "CHACHA20_POLY1305",
    "CIPHERS",
    "PacketCipher",
    "PacketKey",
    "UnprotectError",
    "cipher_for_tls_suite",
    "initial_keys",
    "initial_secrets",
    "retry_integrity_tag",
    "verify_retry_integrity",
]

IV_LEN = 12  # every QUIC AEAD has a 96-bit nonce
TAG_LEN = 16  # and a 128-bit tag (AES-CCM-8 is excluded by RFC 9001 §5.3)
SAMPLE_LEN = 16  # §5.4.2
PN_SAMPLE_OFFSET = 4  # §5.4.2: sampling assumes a 4-byte packet number
INITIAL_SECRET_LEN = 32  # SHA-256


class UnprotectError(Exception):
    """A packet that cannot be unprotected. RFC 9001 §5.5/§9.5: drop it, no error."""


class _Aead(Protocol):
    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None, /) -> bytes: ...
    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None, /) -> bytes: ...


class _HeaderProtection(Protocol):
    def mask(self, sample: bytes) -> bytes: ...


_ECB = modes.ECB()  # a mode object holds no state: one serves every key


class _AesHeaderProtection:
    """§5.4.3: mask = AES-ECB(hp_key, sample). ECB has no state between blocks, so one
    encryptor serves every packet (about 15x cheaper than a new one per mask)."""

    __slots__ = ("_encryptor",)

    def __init__(self, key: bytes) -> None:
        self._encryptor = Cipher(algorithms.AES(key), _ECB).encryptor()

    def mask(self, sample: bytes) -> bytes:
        return self._encryptor.update(sample)[:5]


class _ChaChaHeaderProtection:
    """§5.4.4: counter = sample[0:4] (little-endian), nonce = sample[4:16]. That is
    exactly cryptography's 16-byte ChaCha20 nonce, so the sample is passed as is."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def mask(self, sample: bytes) -> bytes:
        return Cipher(algorithms.ChaCha20(self._key, sample), mode=None).encryptor().update(
            b"\0\0\0\0\0"
        )


@dataclass(frozen=True, eq=False)
class PacketCipher:
    """An AEAD usable for QUIC packets, named by both numbering schemes we meet."""

    name: str
    kernel_type: int  # TLS_CIPHER_* in struct quic_crypto_secret
    tls_suite: int  # RFC 8446 §B.4
    hash_algorithm: hashes.HashAlgorithm = field(repr=False)
    key_len: int = field(repr=False)  # also the header protection key length (§5.4)
    aead: Callable[[bytes], _Aead] = field(repr=False)
    header_protection: Callable[[bytes], _HeaderProtection] = field(repr=False)

    @property
    def secret_len(self) -> int:
        return self.hash_algorithm.digest_size


AES_128_GCM = PacketCipher(
    name="AES_128_GCM",
    kernel_type=kernel_numbers.TLS_CIPHER_AES_GCM_128,
    tls_suite=0x1301,
    hash_algorithm=hashes.SHA256(),
    key_len=16,
    aead=AESGCM,
    header_protection=_AesHeaderProtection,
)
AES_256_GCM = PacketCipher(
    name="AES_256_GCM",
    kernel_type=kernel_numbers.TLS_CIPHER_AES_GCM_256,
    tls_suite=0x1302,
    hash_algorithm=hashes.SHA384(),
    key_len=32,
    aead=AESGCM,
    header_protection=_AesHeaderProtection,
)
CHACHA20_POLY1305 = PacketCipher(
    name="CHACHA20_POLY1305",
    kernel_type=kernel_numbers.TLS_CIPHER_CHACHA20_POLY1305,
    tls_suite=0x1303,
    hash_algorithm=hashes.SHA256(),
    key_len=32,
    aead=ChaCha20Poly1305,
    header_protection=_ChaChaHeaderProtection,
)
# Not offered by our TLS engine, but the kernel accepts type 53, so the sim must too.
AES_128_CCM = PacketCipher(
    name="AES_128_CCM",
    kernel_type=kernel_numbers.TLS_CIPHER_AES_CCM_128,
    tls_suite=0x1304,
    hash_algorithm=hashes.SHA256(),
    key_len=16,
    aead=AESCCM,
    header_protection=_AesHeaderProtection,
)

# By kernel cipher type: what a CRYPTO_SECRET setsockopt names.
CIPHERS: dict[int, PacketCipher] = {
    c.kernel_type: c for c in (AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, AES_128_CCM)
}
_BY_TLS_SUITE: dict[int, PacketCipher] = {c.tls_suite: c for c in CIPHERS.values()}


def cipher_for_tls_suite(suite: int) -> PacketCipher:
    return _BY_TLS_SUITE[suite]


_KEY_INFOS: dict[tuple[int, int], tuple[bytes, bytes, bytes]] = {}


def _key_infos(cipher: PacketCipher, version: QuicVersion) -> tuple[bytes, bytes, bytes]:
    """The HkdfLabels of "quic key", "quic iv" and "quic hp" (§5.1; RFC 9369 §3.3.2
    labels for v2): constants per cipher and version."""
    infos = _KEY_INFOS.get((cipher.kernel_type, version.number))
    if infos is None:
        infos = _KEY_INFOS[(cipher.kernel_type, version.number)] = (
            hkdf_label(version.key_label, b"", cipher.key_len),
            hkdf_label(version.iv_label, b"", IV_LEN),
            hkdf_label(version.hp_label, b"", cipher.key_len))
    return infos


class PacketKey:
    """Packet protection for one direction of one level.

    Built from a traffic secret; the keys themselves (key, iv, hp and the AEAD and header
    protection objects, §5.1) are derived by `derive()`: at the first packet at the latest,
    or earlier by whoever has idle time (the simulation derives installed keys before it
    blocks waiting for the peer, so derivation is off the path of the datagrams it sends).
    Deriving is deterministic, so when it happens changes no byte on the wire."""

    __slots__ = ("cipher", "version", "secret", "_key", "_iv", "_hp_key", "_aead", "_iv_int", "_hp")

    def __init__(
        self,
        cipher: PacketCipher,
        secret: bytes,
        version: QuicVersion,
        hp_key: bytes | None = None,
        _hp: _HeaderProtection | None = None,
    ) -> None:
        """Keep `secret` for derive(); `hp_key` (and its cipher object `_hp`) when they
        are inherited (a key update keeps them, §6)."""
        if len(secret) != cipher.secret_len:
            raise ValueError(f"{cipher.name} needs a {cipher.secret_len}-byte secret")
        self.cipher = cipher
        self.version = version
        self.secret = secret
        self._hp_key = hp_key
        self._hp = _hp
        self._aead: _Aead | None = None  # None: not derived yet

    @property
    def derived(self) -> bool:
        return self._aead is not None

    def derive(self) -> None:
        """Derive key, iv and (unless inherited) hp from the secret (§5.1); idempotent.
        Each is HKDF-Expand-Label with an empty context, its HkdfLabel kept per cipher."""
        if self._aead is not None:
            return
        cipher, secret = self.cipher, self.secret
        algorithm = cipher.hash_algorithm
        key_info, iv_info, hp_info = _key_infos(cipher, self.version)
        self._key = hkdf_expand(algorithm, secret, key_info, cipher.key_len)
        self._iv = hkdf_expand(algorithm, secret, iv_info, IV_LEN)
        self._iv_int = int.from_bytes(self._iv, "big")
        if self._hp_key is None:
            self._hp_key = hkdf_expand(algorithm, secret, hp_info, cipher.key_len)
        if self._hp is None:
            self._hp = cipher.header_protection(self._hp_key)
        self._aead = cipher.aead(self._key)  # last: it marks the key as derived

    def forget_derived(self) -> None:
        """Drop the AEAD and header-protection objects (about 3.5 KiB of cipher contexts
        for AES); derive() makes them again from what is kept. For a key that may sit
        unused for long: a half-open connection's."""
        self._aead = None
        self._hp = None

    @property
    def key(self) -> bytes:
        self.derive()
        return self._key

    @property
    def iv(self) -> bytes:
        self.derive()
        return self._iv

    @property
    def hp(self) -> bytes:
        self.derive()
        hp_key = self._hp_key
        assert hp_key is not None  # derive() made it, if it was not inherited
        return hp_key

    def next_phase(self) -> PacketKey:
        """Keys after a key update (§6.1): new secret via "quic ku"; the header protection
        key does not change (§6), nor does its cipher object."""
        self.derive()
        secret = hkdf_expand_label(self.cipher.hash_algorithm, self.secret, self.version.ku_label,
                                   b"", len(self.secret))
        return PacketKey(self.cipher, secret, self.version, hp_key=self._hp_key, _hp=self._hp)

    # ---- pieces ------------------------------------------------------------------------

    def nonce(self, packet_number: int) -> bytes:
        """§5.3: the IV XOR the packet number, left-padded to the IV length."""
        self.derive()
        return self._nonce(packet_number)

    def _nonce(self, packet_number: int) -> bytes:
        return (self._iv_int ^ packet_number).to_bytes(IV_LEN, "big")

    def header_mask(self, sample: bytes) -> bytes:
        self.derive()
        return self._derived_hp().mask(sample)

    def encrypt(self, packet_number: int, header: bytes, payload: bytes) -> bytes:
        return self._derived_aead().encrypt(self._nonce(packet_number), payload, header)  # derived first

    def decrypt(self, packet_number: int, header: bytes, ciphertext: bytes) -> bytes:
        return self._derived_aead().decrypt(self._nonce(packet_number), ciphertext, header)  # derived first

    def _derived_aead(self) -> _Aead:
        aead = self._aead
        if aead is None:
            self.derive()
            aead = self._aead
            assert aead is not None  # derive() made it
        return aead

    def _derived_hp(self) -> _HeaderProtection:
        hp = self._hp
        if hp is None:
            self.derive()
            hp = self._hp
            assert hp is not None  # derive() made it
        return hp

    # ---- whole packets -----------------------------------------------------------------

    def protect(self, header: bytes, payload: bytes, packet_number: int) -> bytes:
        """Encrypt `payload` (§5.3) and apply header protection (§5.4.1)."""
        first = header[0]
        pn_len = (first & 0x03) + 1
        pn_offset = len(header) - pn_len
        aead = self._derived_aead()
        ciphertext = aead.encrypt(self._nonce(packet_number), payload, header)
        sample_at = PN_SAMPLE_OFFSET - pn_len
        sample = ciphertext[sample_at : sample_at + SAMPLE_LEN]
        if len(sample) != SAMPLE_LEN:
            # §5.4.2: the sender pads so that a sample always exists.
            raise ValueError("packet too short for a header protection sample")
        mask = self._derived_hp().mask(sample)
        out = bytearray(header)
        out[0] = first ^ (mask[0] & (0x0F if first & 0x80 else 0x1F))
        # The packet number bytes XOR mask[1:1+pn_len], as one integer operation.
        pn_masked = int.from_bytes(header[pn_offset:], "big") ^ int.from_bytes(mask[1:1 + pn_len], "big")
        out[pn_offset:] = pn_masked.to_bytes(pn_len, "big")
        out += ciphertext
        return bytes(out)

    def unprotect(
        self, packet: bytes | bytearray | memoryview, pn_offset: int, largest_pn: int = -1
    ) -> tuple[bytes, bytes, int]:
        """(header with clear first byte and packet number, payload, full packet number).

        `pn_offset` is where the packet number starts; `largest_pn` is the largest packet
        number received in this space so far (-1 if none), for §17.1 recovery.
        """
        sample_at = pn_offset + PN_SAMPLE_OFFSET
        sample = bytes(packet[sample_at : sample_at + SAMPLE_LEN])
        if len(sample) != SAMPLE_LEN:
            raise UnprotectError("packet too short for a header protection sample")
        aead = self._derived_aead()
        mask = self._derived_hp().mask(sample)
        first = packet[0] ^ (mask[0] & (0x0F if packet[0] & 0x80 else 0x1F))
        pn_len = (first & 0x03) + 1
        pn_end = pn_offset + pn_len
        # The packet number bytes XOR mask[1:1+pn_len], as one integer operation.
        truncated = int.from_bytes(packet[pn_offset:pn_end], "big")
        truncated ^= int.from_bytes(mask[1 : 1 + pn_len], "big")
        pn_bytes = truncated.to_bytes(pn_len, "big")
        packet_number = decode_packet_number(largest_pn, truncated, 8 * pn_len)
        header = bytes((first,)) + bytes(packet[1:pn_offset]) + pn_bytes
        try:
            payload = aead.decrypt(self._nonce(packet_number), bytes(packet[pn_end:]), header)
        except InvalidTag:
            raise UnprotectError(f"AEAD authentication failed (pn {packet_number})") from None
        return header, payload, packet_number


# ---- Initial keys (§5.2) -------------------------------------------------------------------


_SHA256 = hashes.SHA256()


def initial_secrets(dcid: bytes, version: QuicVersion) -> tuple[bytes, bytes]:
    """(client_initial_secret, server_initial_secret) for the client's first DCID."""
    initial = hkdf_extract(_SHA256, version.initial_salt, dcid)
    return (hkdf_expand_label(_SHA256, initial, b"client in", b"", INITIAL_SECRET_LEN),
            hkdf_expand_label(_SHA256, initial, b"server in", b"", INITIAL_SECRET_LEN))


def initial_keys(dcid: bytes, version: QuicVersion) -> tuple[PacketKey, PacketKey]:
    """(client key, server key) of the Initial level: always AES-128-GCM (§5.2)."""
    client, server = initial_secrets(dcid, version)
    return PacketKey(AES_128_GCM, client, version), PacketKey(AES_128_GCM, server, version)


# ---- Retry integrity (§5.8; RFC 9369 §3.3.3) ------------------------------------------------

_RETRY_AEAD: dict[int, AESGCM] = {
    number: AESGCM(v.retry_key) for number, v in SUPPORTED_VERSIONS.items()
}


def retry_integrity_tag(version: QuicVersion, odcid: bytes, retry_without_tag: bytes) -> bytes:
    """The tag that ends a Retry packet: AEAD over the Retry pseudo-packet, which is the
    client's original DCID (length-prefixed) followed by the Retry packet without its tag."""
    pseudo_packet = bytes((len(odcid),)) + odcid + retry_without_tag
    return _RETRY_AEAD[version.number].encrypt(version.retry_nonce, b"", pseudo_packet)


def verify_retry_integrity(version: QuicVersion, odcid: bytes, retry_packet: bytes) -> bool:
    if len(retry_packet) < TAG_LEN:
        return False
    body, tag = retry_packet[:-TAG_LEN], retry_packet[-TAG_LEN:]
    return hmac.compare_digest(retry_integrity_tag(version, odcid, body), tag)
