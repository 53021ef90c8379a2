"""TLS 1.3 key schedule (RFC 8446 §7.1), Finished/binder MACs (§4.4.4, §4.2.11.2),
resumption PSK (§4.6.1), traffic keys (§7.3) and exporters (§7.5).

HKDF and HKDF-Expand-Label are quichsd/hkdf.py's (the one implementation, shared with QUIC
packet protection); HMAC is cryptography's.

What is here: the HkdfLabel of every label the key schedule uses, made at import up to
(and including) the context length byte, so a Derive-Secret is one dict lookup, one
concatenation and one HKDF-Expand; and the values that depend on no handshake (the
PSK-less Early Secret and its "derived" secret), computed once per hash.
"""
from __future__ import annotations

import hmac as _stdlib_hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

from ..hkdf import hkdf_expand, hkdf_expand_label, hkdf_extract, hkdf_label_prefix
from .constants import AlertDescription, HandshakeType
from .errors import TlsError
from .suites import EMPTY_HASHES, HASH_ALGORITHMS, HASH_CONSTRUCTORS, SuiteInfo

# Derive-Secret labels (§7.1): output and context are both Hash.length long, so their
# prefixes are fixed per hash. hash name -> label -> prefix.
_DERIVE_SECRET_LABELS = (
    b"ext binder",
    b"res binder",
    b"c e traffic",
    b"e exp master",
    b"derived",
    b"c hs traffic",
    b"s hs traffic",
    b"c ap traffic",
    b"s ap traffic",
    b"exp master",
    b"res master",
)
_DS_PREFIXES: dict[str, dict[bytes, bytes]] = {
    name: {
        label: hkdf_label_prefix(label, alg.digest_size, alg.digest_size)
        for label in _DERIVE_SECRET_LABELS
    }
    for name, alg in HASH_ALGORITHMS.items()
}
# HKDF-Expand-Label(BaseKey, "finished", "", Hash.length) (§4.4.4): the whole info is fixed.
_FINISHED_INFO: dict[str, bytes] = {
    name: hkdf_label_prefix(b"finished", alg.digest_size, 0)
    for name, alg in HASH_ALGORITHMS.items()
}
# hash name -> (algorithm, Hash.length, finished info), one lookup per Finished MAC.
_FINISHED: dict[str, tuple[hashes.HashAlgorithm, int, bytes]] = {
    name: (alg, alg.digest_size, _FINISHED_INFO[name]) for name, alg in HASH_ALGORITHMS.items()
}
# Derive-Secret(., "derived", "") (§7.1): the whole info is fixed too.
_DERIVED_INFO: dict[str, bytes] = {
    name: _DS_PREFIXES[name][b"derived"] + EMPTY_HASHES[name] for name in HASH_ALGORITHMS
}


def derive_secret(hash_name: str, secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
    """Derive-Secret(Secret, Label, Messages) (§7.1), given Transcript-Hash(Messages)."""
    algorithm = HASH_ALGORITHMS[hash_name]
    return hkdf_expand_label(algorithm, secret, label, transcript_hash, algorithm.digest_size)


# --- Finished, binders, resumption (§4.4.4, §4.2.11.2, §4.6.1) -------------------------


def finished_verify_data(hash_name: str, base_secret: bytes, transcript_hash: bytes) -> bytes:
    """verify_data = HMAC(finished_key, Transcript-Hash(...)) (§4.4.4).

    finished_key = HKDF-Expand-Label(BaseKey, "finished", "", Hash.length). With the
    binder key as BaseKey and the hash of the truncated ClientHello this is the PSK
    binder (§4.2.11.2).
    """
    algorithm, length, info = _FINISHED[hash_name]
    mac = HMAC(hkdf_expand(algorithm, base_secret, info, length), algorithm)
    mac.update(transcript_hash)
    return mac.finalize()


def verify_finished(expected: bytes, got: bytes) -> bool:
    """Constant-time comparison of Finished verify_data or a PSK binder (§4.4.4)."""
    return _stdlib_hmac.compare_digest(expected, got)


def resumption_psk(hash_name: str, resumption_master_secret: bytes, ticket_nonce: bytes) -> bytes:
    """PSK of a ticket (§4.6.1): HKDF-Expand-Label(rms, "resumption", nonce, Hash.length)."""
    algorithm = HASH_ALGORITHMS[hash_name]
    return hkdf_expand_label(
        algorithm, resumption_master_secret, b"resumption", ticket_nonce, algorithm.digest_size
    )


def message_hash(hash_name: str, client_hello1: bytes) -> bytes:
    """The synthetic handshake message that replaces ClientHello1 in the transcript after a
    HelloRetryRequest (§4.4.1): msg_type message_hash(254), uint24 length = Hash.length,
    then Hash(ClientHello1). `client_hello1` includes its 4-byte handshake header.
    """
    digest: bytes = HASH_CONSTRUCTORS[hash_name](client_hello1).digest()
    return bytes((HandshakeType.MESSAGE_HASH, 0, 0, len(digest))) + digest


# --- Traffic keys and secret updates (§7.2, §7.3) --------------------------------------


def traffic_key_iv(
    suite: SuiteInfo, secret: bytes, key_label: bytes = b"key", iv_label: bytes = b"iv"
) -> tuple[bytes, bytes]:
    """[sender]_write_key / _iv (§7.3). QUIC passes b"quic key" / b"quic iv" (RFC 9001 §5.1)."""
    algorithm = suite.hash_algorithm
    return (
        hkdf_expand_label(algorithm, secret, key_label, b"", suite.key_len),
        hkdf_expand_label(algorithm, secret, iv_label, b"", suite.iv_len),
    )


def next_traffic_secret(hash_name: str, secret: bytes, label: bytes = b"traffic upd") -> bytes:
    """application_traffic_secret_N+1 (§7.2). QUIC key update uses b"quic ku" (RFC 9001 §6.1)."""
    algorithm = HASH_ALGORITHMS[hash_name]
    return hkdf_expand_label(algorithm, secret, label, b"", algorithm.digest_size)


def export_keying_material(
    hash_name: str, exporter_master_secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """TLS-Exporter(label, context_value, key_length) (§7.5). `label` excludes "tls13 "."""
    algorithm = HASH_ALGORITHMS[hash_name]
    try:
        secret = hkdf_expand_label(
            algorithm, exporter_master_secret, label, EMPTY_HASHES[hash_name], algorithm.digest_size
        )
        context_hash = HASH_CONSTRUCTORS[hash_name](context).digest()
        return hkdf_expand_label(algorithm, secret, b"exporter", context_hash, length)
    except ValueError:  # a label over 249 bytes or a length over 2^16 - 1
        raise TlsError(AlertDescription.internal_error, "exporter label or length out of range") from None


# --- Handshake-independent constants, once per hash ------------------------------------

# Without a PSK, Early Secret = HKDF-Extract(0, 0) and its "derived" secret are the same
# for every handshake (§7.1): two HMACs saved per full handshake.
_NO_PSK_EARLY: dict[str, bytes] = {}
_NO_PSK_DERIVED: dict[str, bytes] = {}
for _name, _alg in HASH_ALGORITHMS.items():
    _NO_PSK_EARLY[_name] = hkdf_extract(_alg, b"", bytes(_alg.digest_size))
    _NO_PSK_DERIVED[_name] = hkdf_expand(_alg, _NO_PSK_EARLY[_name], _DERIVED_INFO[_name], _alg.digest_size)
del _name, _alg


class KeySchedule:
    """The secrets of one connection, stage by stage (§7.1):

        KeySchedule(suite, psk)  -> early_secret (binder, 0-RTT and early exporter secrets)
        .handshake(shared)       -> handshake_secret (handshake traffic secrets)
        .master()                -> master_secret (application, exporter, resumption)

    Transcript hashes come in as arguments: the engine owns the transcript. Calling a
    stage out of order is an engine bug and raises TlsError(internal_error).
    """

    __slots__ = (
        "suite",
        "early_secret",
        "handshake_secret",
        "master_secret",
        "_algorithm",
        "_hash_len",
        "_labels",
        "_derived_info",
        "_derived",
    )

    def __init__(self, suite: SuiteInfo, psk: bytes | None = None) -> None:
        name = suite.hash_name
        self.suite = suite
        self._algorithm = algorithm = suite.hash_algorithm
        self._hash_len = suite.hash_len
        self._labels = _DS_PREFIXES[name]
        self._derived_info = _DERIVED_INFO[name]
        if psk is None:
            self.early_secret = _NO_PSK_EARLY[name]
            self._derived = _NO_PSK_DERIVED[name]
        else:
            self.early_secret = early = hkdf_extract(algorithm, b"", psk)
            self._derived = hkdf_expand(algorithm, early, self._derived_info, suite.hash_len)
        self.handshake_secret = b""
        self.master_secret = b""

    def _secret(self, secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
        # Derive-Secret (§7.1) for one of _DERIVE_SECRET_LABELS; the prefix already holds
        # the context length, so transcript_hash must be a digest of this suite's hash.
        info = self._labels[label] + transcript_hash
        return hkdf_expand(self._algorithm, secret, info, self._hash_len)

    # Early Secret stage (§7.1)
    def binder_key(self, external: bool) -> bytes:
        """binder_key: "ext binder" for external PSKs, "res binder" for tickets (§7.1)."""
        label = b"ext binder" if external else b"res binder"
        return self._secret(self.early_secret, label, self.suite.empty_hash)

    def client_early_traffic_secret(self, transcript_hash: bytes) -> bytes:
        """client_early_traffic_secret over ClientHello (§7.1)."""
        return self._secret(self.early_secret, b"c e traffic", transcript_hash)

    def early_exporter_master_secret(self, transcript_hash: bytes) -> bytes:
        """early_exporter_master_secret over ClientHello (§7.1)."""
        return self._secret(self.early_secret, b"e exp master", transcript_hash)

    # Handshake Secret stage (§7.1)
    def handshake(self, shared_secret: bytes | None) -> None:
        """Handshake Secret = HKDF-Extract(Derive-Secret(early, "derived", ""), (EC)DHE).

        `shared_secret` None means psk_ke mode: the (EC)DHE input is hash_len zeros (§7.1).
        """
        algorithm = self._algorithm
        ikm = bytes(self._hash_len) if shared_secret is None else shared_secret
        self.handshake_secret = secret = hkdf_extract(algorithm, self._derived, ikm)
        self._derived = hkdf_expand(algorithm, secret, self._derived_info, self._hash_len)

    def handshake_traffic_secrets(self, transcript_hash: bytes) -> tuple[bytes, bytes]:
        """(client, server) handshake traffic secrets over ClientHello..ServerHello (§7.1)."""
        secret = self.handshake_secret
        if not secret:
            raise TlsError(AlertDescription.internal_error, "handshake secret not set")
        labels, algorithm, n = self._labels, self._algorithm, self._hash_len
        return (
            hkdf_expand(algorithm, secret, labels[b"c hs traffic"] + transcript_hash, n),
            hkdf_expand(algorithm, secret, labels[b"s hs traffic"] + transcript_hash, n),
        )

    # Master Secret stage (§7.1)
    def master(self) -> None:
        """Master Secret = HKDF-Extract(Derive-Secret(handshake, "derived", ""), 0)."""
        if not self.handshake_secret:
            raise TlsError(AlertDescription.internal_error, "master before handshake secret")
        self.master_secret = hkdf_extract(self._algorithm, self._derived, bytes(self._hash_len))

    def _master(self) -> bytes:
        secret = self.master_secret
        if not secret:
            raise TlsError(AlertDescription.internal_error, "master secret not set")
        return secret

    def application_traffic_secrets(self, transcript_hash: bytes) -> tuple[bytes, bytes]:
        """(client, server) application traffic secrets 0 over ..server Finished (§7.1)."""
        secret = self._master()
        labels, algorithm, n = self._labels, self._algorithm, self._hash_len
        return (
            hkdf_expand(algorithm, secret, labels[b"c ap traffic"] + transcript_hash, n),
            hkdf_expand(algorithm, secret, labels[b"s ap traffic"] + transcript_hash, n),
        )

    def exporter_master_secret(self, transcript_hash: bytes) -> bytes:
        """exporter_master_secret over ..server Finished (§7.1)."""
        return self._secret(self._master(), b"exp master", transcript_hash)

    def resumption_master_secret(self, transcript_hash: bytes) -> bytes:
        """resumption_master_secret over ..client Finished (§7.1)."""
        return self._secret(self._master(), b"res master", transcript_hash)
