"""CertificateVerify signatures: RFC 8448 traces, round trips, and every alert."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from quichsd.tls.constants import AlertDescription, CipherSuite, SignatureScheme
from quichsd.tls.errors import TlsError
from quichsd.tls.signatures import (
    SUPPORTED_SCHEMES,
    certificate_verify_content,
    choose_scheme,
    schemes_for_private_key,
    sign,
    verify,
)
from quichsd.tls.suites import SUITES

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
SHA256 = SUITES[CipherSuite.AES_128_GCM_SHA256]


@cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return data


def messages(name: str) -> dict[str, bytes]:
    return {k: bytes.fromhex(v) for k, v in load(name)["summary"]["messages"].items()}


def transcript(name: str, order: list[str]) -> bytes:
    h = SHA256.new_hash()
    msgs = messages(name)
    for m in order:
        h.update(msgs[m])
    return h.digest()


def parse_certificate_verify(msg: bytes) -> tuple[int, bytes]:
    # RFC 8446 §4.4.3: HandshakeType 15, uint24 length, SignatureScheme, opaque sig<0..2^16-1>
    assert msg[0] == 15 and int.from_bytes(msg[1:4], "big") == len(msg) - 4
    scheme = int.from_bytes(msg[4:6], "big")
    sig_len = int.from_bytes(msg[6:8], "big")
    assert len(msg) == 8 + sig_len
    return scheme, msg[8:]


def cert_key(name: str, which: str) -> Any:
    der = bytes.fromhex(load(name)["summary"]["computed_by_us"][f"{which}_certificate_der"])
    return x509.load_der_x509_certificate(der).public_key()


def expect_alert(alert: AlertDescription, fn: Any, *args: Any) -> TlsError:
    with pytest.raises(TlsError) as info:
        fn(*args)
    assert info.value.alert == alert, info.value
    return info.value


# (trace, signer, server?, transcript through the signer's Certificate, expected scheme)
# RFC 8448 §6 publishes neither private key, but both certificates: so both of its
# CertificateVerify messages are checked, the server's ECDSA and the client's RSA-PSS.
CASES = {
    "s3_server": (
        "rfc8448_simple_1rtt",
        "server",
        True,
        ["ClientHello", "ServerHello", "EncryptedExtensions", "server_Certificate"],
        SignatureScheme.RSA_PSS_RSAE_SHA256,
    ),
    "s5_server": (
        "rfc8448_hrr",
        "server",
        True,
        [
            "ClientHello",  # replaced by message_hash below
            "HelloRetryRequest",
            "ClientHello_2",
            "ServerHello",
            "EncryptedExtensions",
            "server_Certificate",
        ],
        SignatureScheme.RSA_PSS_RSAE_SHA256,
    ),
    "s6_server": (
        "rfc8448_client_auth",
        "server",
        True,
        [
            "ClientHello",
            "ServerHello",
            "EncryptedExtensions",
            "CertificateRequest",
            "server_Certificate",
        ],
        SignatureScheme.ECDSA_SECP256R1_SHA256,
    ),
    "s6_client": (
        "rfc8448_client_auth",
        "client",
        False,
        [
            "ClientHello",
            "ServerHello",
            "EncryptedExtensions",
            "CertificateRequest",
            "server_Certificate",
            "server_CertificateVerify",
            "server_Finished",
            "client_Certificate",
        ],
        SignatureScheme.RSA_PSS_RSAE_SHA256,
    ),
}


def case_inputs(case: str) -> tuple[int, Any, bytes, bytes, bool]:
    from quichsd.tls.keyschedule import message_hash

    name, who, server, order, expected_scheme = CASES[case]
    if name == "rfc8448_hrr":
        msgs = messages(name)
        h = SHA256.new_hash()
        h.update(message_hash("sha256", msgs["ClientHello"]))
        for m in order[1:]:
            h.update(msgs[m])
        th = h.digest()
    else:
        th = transcript(name, order)
    computed = load(name)["summary"]["computed_by_us"]["transcript_hashes"]
    assert th.hex() == computed[f"for_{who}_CertificateVerify_(through_{who}_Certificate)"]
    scheme, signature = parse_certificate_verify(messages(name)[f"{who}_CertificateVerify"])
    assert scheme == expected_scheme
    return scheme, cert_key(name, who), th, signature, server


@pytest.mark.parametrize("case", CASES)
def test_rfc8448_certificate_verify(case: str) -> None:
    scheme, key, th, signature, server = case_inputs(case)
    content = certificate_verify_content(server, th)
    verify(scheme, key, content, signature)


@pytest.mark.parametrize("case", CASES)
def test_rfc8448_flipped_signature_byte(case: str) -> None:
    scheme, key, th, signature, server = case_inputs(case)
    content = certificate_verify_content(server, th)
    for i in (0, len(signature) // 2, len(signature) - 1):
        bad = signature[:i] + bytes([signature[i] ^ 0x01]) + signature[i + 1 :]
        expect_alert(AlertDescription.decrypt_error, verify, scheme, key, content, bad)
    expect_alert(AlertDescription.decrypt_error, verify, scheme, key, content, b"")


@pytest.mark.parametrize("case", CASES)
def test_rfc8448_flipped_transcript_byte(case: str) -> None:
    scheme, key, th, signature, server = case_inputs(case)
    bad_th = bytes([th[0] ^ 0x80]) + th[1:]
    content = certificate_verify_content(server, bad_th)
    expect_alert(AlertDescription.decrypt_error, verify, scheme, key, content, signature)
    # the other side's context string must not verify either (§4.4.3)
    wrong_side = certificate_verify_content(not server, th)
    expect_alert(AlertDescription.decrypt_error, verify, scheme, key, wrong_side, signature)


def test_certificate_verify_content() -> None:
    th = bytes(range(32))
    server = certificate_verify_content(True, th)
    assert server == b"\x20" * 64 + b"TLS 1.3, server CertificateVerify\x00" + th
    client = certificate_verify_content(False, th)
    assert client == b"\x20" * 64 + b"TLS 1.3, client CertificateVerify\x00" + th


def rfc8448_rsa_key() -> rsa.RSAPrivateKey:
    pem = load("rfc8448_simple_1rtt")["server_rsa_private_key"]["pkcs8_pem_computed_by_us"]
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def test_rfc8448_rsa_key_signs_for_its_certificate() -> None:
    key = rfc8448_rsa_key()
    public = cert_key("rfc8448_simple_1rtt", "server")
    assert key.public_key().public_numbers() == public.public_numbers()
    # 1024-bit: PSS with SHA-512 and a 64-byte salt does not fit (RFC 8017 §9.1.1).
    assert schemes_for_private_key(key) == [
        SignatureScheme.RSA_PSS_RSAE_SHA256,
        SignatureScheme.RSA_PSS_RSAE_SHA384,
    ]
    data = certificate_verify_content(True, bytes(32))
    for scheme in schemes_for_private_key(key):
        verify(scheme, public, data, sign(scheme, key, data))


# --- generated keys: every scheme -----------------------------------------------------


@cache
def generated_keys() -> dict[SignatureScheme, PrivateKeyTypes]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        SignatureScheme.ECDSA_SECP256R1_SHA256: ec.generate_private_key(ec.SECP256R1()),
        SignatureScheme.ECDSA_SECP384R1_SHA384: ec.generate_private_key(ec.SECP384R1()),
        SignatureScheme.RSA_PSS_RSAE_SHA256: rsa_key,
        SignatureScheme.RSA_PSS_RSAE_SHA384: rsa_key,
        SignatureScheme.RSA_PSS_RSAE_SHA512: rsa_key,
        SignatureScheme.ED25519: ed25519.Ed25519PrivateKey.generate(),
    }


def test_supported_schemes() -> None:
    assert SUPPORTED_SCHEMES == (
        SignatureScheme.ECDSA_SECP256R1_SHA256,
        SignatureScheme.ECDSA_SECP384R1_SHA384,
        SignatureScheme.RSA_PSS_RSAE_SHA256,
        SignatureScheme.RSA_PSS_RSAE_SHA384,
        SignatureScheme.RSA_PSS_RSAE_SHA512,
        SignatureScheme.ED25519,
    )


@pytest.mark.parametrize("scheme", SUPPORTED_SCHEMES)
def test_round_trip(scheme: SignatureScheme) -> None:
    key = generated_keys()[scheme]
    data = certificate_verify_content(True, b"\x5a" * 48)
    signature = sign(scheme, key, data)
    verify(scheme, key.public_key(), data, signature)
    verify(int(scheme), key.public_key(), data, signature)  # wire value works too
    bad = signature[:-1] + bytes([signature[-1] ^ 1])
    expect_alert(AlertDescription.decrypt_error, verify, scheme, key.public_key(), data, bad)
    expect_alert(
        AlertDescription.decrypt_error, verify, scheme, key.public_key(), data + b"x", signature
    )


def test_rsa_pss_salt_is_hash_length() -> None:
    # Our signatures verify with an explicit PSS(salt_length = hash length) (§4.2.3).
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = generated_keys()[SignatureScheme.RSA_PSS_RSAE_SHA256]
    assert isinstance(key, rsa.RSAPrivateKey)
    for scheme, h in (
        (SignatureScheme.RSA_PSS_RSAE_SHA256, hashes.SHA256()),
        (SignatureScheme.RSA_PSS_RSAE_SHA384, hashes.SHA384()),
        (SignatureScheme.RSA_PSS_RSAE_SHA512, hashes.SHA512()),
    ):
        sig = sign(scheme, key, b"data")
        pss = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
        key.public_key().verify(sig, b"data", pss, h)


def test_schemes_for_private_key() -> None:
    k = generated_keys()
    assert schemes_for_private_key(k[SignatureScheme.ECDSA_SECP256R1_SHA256]) == [
        SignatureScheme.ECDSA_SECP256R1_SHA256
    ]
    assert schemes_for_private_key(k[SignatureScheme.ECDSA_SECP384R1_SHA384]) == [
        SignatureScheme.ECDSA_SECP384R1_SHA384
    ]
    assert schemes_for_private_key(k[SignatureScheme.RSA_PSS_RSAE_SHA256]) == [
        SignatureScheme.RSA_PSS_RSAE_SHA256,
        SignatureScheme.RSA_PSS_RSAE_SHA384,
        SignatureScheme.RSA_PSS_RSAE_SHA512,
    ]
    assert schemes_for_private_key(k[SignatureScheme.ED25519]) == [SignatureScheme.ED25519]
    assert schemes_for_private_key(ec.generate_private_key(ec.SECP521R1())) == []


def test_choose_scheme() -> None:
    k = generated_keys()
    rsa_key = k[SignatureScheme.RSA_PSS_RSAE_SHA256]
    # our preference among what the peer offers
    assert choose_scheme(rsa_key, [0x0806, 0x0805, 0x0804]) == 0x0804
    assert choose_scheme(rsa_key, [0x0403, 0x0806]) == SignatureScheme.RSA_PSS_RSAE_SHA512
    p256 = k[SignatureScheme.ECDSA_SECP256R1_SHA256]
    assert choose_scheme(p256, [0x0804, 0x0403]) == SignatureScheme.ECDSA_SECP256R1_SHA256
    expect_alert(AlertDescription.handshake_failure, choose_scheme, p256, [0x0503, 0x0804])
    expect_alert(AlertDescription.handshake_failure, choose_scheme, rsa_key, [0x0401, 0x0809])
    expect_alert(AlertDescription.handshake_failure, choose_scheme, p256, [])


# --- scheme does not fit the key: illegal_parameter ----------------------------------

MISMATCHES = [
    # (scheme, key of the wrong type or curve)
    (SignatureScheme.ECDSA_SECP384R1_SHA384, SignatureScheme.ECDSA_SECP256R1_SHA256),
    (SignatureScheme.ECDSA_SECP256R1_SHA256, SignatureScheme.ECDSA_SECP384R1_SHA384),
    (SignatureScheme.ECDSA_SECP256R1_SHA256, SignatureScheme.RSA_PSS_RSAE_SHA256),
    (SignatureScheme.RSA_PSS_RSAE_SHA256, SignatureScheme.ECDSA_SECP256R1_SHA256),
    (SignatureScheme.RSA_PSS_RSAE_SHA512, SignatureScheme.ED25519),
    (SignatureScheme.ED25519, SignatureScheme.ECDSA_SECP256R1_SHA256),
    (SignatureScheme.ED25519, SignatureScheme.RSA_PSS_RSAE_SHA384),
]


@pytest.mark.parametrize(("scheme", "key_of"), MISMATCHES)
def test_verify_scheme_key_mismatch(scheme: SignatureScheme, key_of: SignatureScheme) -> None:
    key = generated_keys()[key_of]
    data = b"content"
    signature = sign(key_of, key, data)
    public = key.public_key()
    expect_alert(AlertDescription.illegal_parameter, verify, scheme, public, data, signature)


@pytest.mark.parametrize(("scheme", "key_of"), MISMATCHES)
def test_sign_scheme_key_mismatch(scheme: SignatureScheme, key_of: SignatureScheme) -> None:
    # Our own key not fitting our own choice is a local bug: internal_error.
    key = generated_keys()[key_of]
    expect_alert(AlertDescription.internal_error, sign, scheme, key, b"content")


@pytest.mark.parametrize(
    "scheme",
    [
        SignatureScheme.RSA_PKCS1_SHA256,  # not allowed for CertificateVerify (§4.2.3)
        SignatureScheme.RSA_PSS_PSS_SHA256,
        SignatureScheme.ECDSA_SECP521R1_SHA512,
        SignatureScheme.ED448,
        0x0201,  # rsa_pkcs1_sha1
        0xFEFE,
    ],
)
def test_unsupported_scheme(scheme: int) -> None:
    key = generated_keys()[SignatureScheme.RSA_PSS_RSAE_SHA256]
    expect_alert(
        AlertDescription.illegal_parameter, verify, scheme, key.public_key(), b"x", b"\x00" * 256
    )
    expect_alert(AlertDescription.internal_error, sign, scheme, key, b"x")
