"""Key schedule against RFC 8448 §3-§6, byte for byte.

Transcript hashes are computed here from the handshake messages of each trace; the
trace's own transcript hashes are only used as a cross-check of that computation.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from quichsd.hkdf import hkdf_expand_label, hkdf_extract
from quichsd.tls.constants import AlertDescription, CipherSuite
from quichsd.tls.errors import TlsError
from quichsd.tls.keyschedule import (
    KeySchedule,
    derive_secret,
    export_keying_material,
    finished_verify_data,
    message_hash,
    next_traffic_secret,
    resumption_psk,
    traffic_key_iv,
    verify_finished,
)
from quichsd.tls.suites import (
    SUITES,
    TLS_CIPHER_AES_GCM_128,
    TLS_CIPHER_AES_GCM_256,
    TLS_CIPHER_CHACHA20_POLY1305,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
SUITE = SUITES[CipherSuite.AES_128_GCM_SHA256]  # every RFC 8448 trace uses 0x1301
H = "sha256"
SHA256 = hashes.SHA256()
MESSAGE_HASH_OF_CH1 = "message_hash(ClientHello)"


@cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return data


def b(hex_: str) -> bytes:
    return bytes.fromhex(hex_)


@dataclass(frozen=True)
class Trace:
    file: str
    order: tuple[str, ...]  # handshake messages in transcript order

    @property
    def summary(self) -> dict[str, Any]:
        s: dict[str, Any] = load(self.file)["summary"]
        return s

    def message(self, name: str) -> bytes:
        if name == MESSAGE_HASH_OF_CH1:
            return message_hash(H, b(self.summary["messages"]["ClientHello"]))
        return b(self.summary["messages"][name])

    def through(self, name: str) -> bytes:
        """Transcript-Hash of the messages up to and including `name` (RFC 8446 §4.4.1)."""
        h = SUITE.new_hash()
        for m in self.order[: self.order.index(name) + 1]:
            h.update(self.message(m))
        return h.digest()

    def before(self, name: str) -> bytes:
        """Transcript-Hash of the messages before `name`: the context of a Finished."""
        return self.through(self.order[self.order.index(name) - 1])


SIMPLE = Trace(
    "rfc8448_simple_1rtt",
    (
        "ClientHello",
        "ServerHello",
        "EncryptedExtensions",
        "server_Certificate",
        "server_CertificateVerify",
        "server_Finished",
        "client_Finished",
    ),
)
RESUMED = Trace(
    "rfc8448_resumed_0rtt",
    (
        "ClientHello",
        "ServerHello",
        "EncryptedExtensions",
        "server_Finished",
        "EndOfEarlyData",
        "client_Finished",
    ),
)
HRR = Trace(
    "rfc8448_hrr",
    (
        MESSAGE_HASH_OF_CH1,
        "HelloRetryRequest",
        "ClientHello_2",
        "ServerHello",
        "EncryptedExtensions",
        "server_Certificate",
        "server_CertificateVerify",
        "server_Finished",
        "client_Finished",
    ),
)
CLIENT_AUTH = Trace(
    "rfc8448_client_auth",
    (
        "ClientHello",
        "ServerHello",
        "EncryptedExtensions",
        "CertificateRequest",
        "server_Certificate",
        "server_CertificateVerify",
        "server_Finished",
        "client_Certificate",
        "client_CertificateVerify",
        "client_Finished",
    ),
)
TRACES = {"s3_simple": SIMPLE, "s4_resumed": RESUMED, "s5_hrr": HRR, "s6_client_auth": CLIENT_AUTH}


def s3_resumption_psk() -> bytes:
    """The PSK §4 resumes with: from §3's resumption master secret and ticket nonce."""
    ks = run_schedule(SIMPLE)
    rms = ks.resumption_master_secret(SIMPLE.through("client_Finished"))
    nonce = b(SIMPLE.summary["computed_by_us"]["new_session_ticket_fields"]["ticket_nonce"])
    return resumption_psk(H, rms, nonce)


def psk_of(trace: Trace) -> bytes | None:
    return s3_resumption_psk() if trace is RESUMED else None


def run_schedule(trace: Trace) -> KeySchedule:
    ks = KeySchedule(SUITE, psk_of(trace))
    ks.handshake(b(trace.summary["secrets"]["ecdhe_shared_secret"]))
    ks.master()
    return ks


def derived_secrets(trace: Trace) -> dict[str, bytes]:
    """Every secret of the trace, derived by the code under test."""
    ks = KeySchedule(SUITE, psk_of(trace))
    out = {"early_secret": ks.early_secret}
    if trace is RESUMED:
        out["binder_key"] = ks.binder_key(external=False)
        ch = trace.through("ClientHello")
        out["client_early_traffic_secret"] = ks.client_early_traffic_secret(ch)
        out["early_exporter_master_secret"] = ks.early_exporter_master_secret(ch)
    out["derived_for_handshake"] = derive_secret(H, ks.early_secret, b"derived", SUITE.empty_hash)
    ks.handshake(b(trace.summary["secrets"]["ecdhe_shared_secret"]))
    out["handshake_secret"] = ks.handshake_secret
    c_hs, s_hs = ks.handshake_traffic_secrets(trace.through("ServerHello"))
    out["client_handshake_traffic_secret"] = c_hs
    out["server_handshake_traffic_secret"] = s_hs
    out["derived_for_master"] = derive_secret(
        H, ks.handshake_secret, b"derived", SUITE.empty_hash
    )
    ks.master()
    out["master_secret"] = ks.master_secret
    server_finished = trace.through("server_Finished")
    c_ap, s_ap = ks.application_traffic_secrets(server_finished)
    out["client_application_traffic_secret_0"] = c_ap
    out["server_application_traffic_secret_0"] = s_ap
    out["exporter_master_secret"] = ks.exporter_master_secret(server_finished)
    out["resumption_master_secret"] = ks.resumption_master_secret(trace.through("client_Finished"))
    if trace is SIMPLE:
        nonce = b(trace.summary["computed_by_us"]["new_session_ticket_fields"]["ticket_nonce"])
        out["resumption_psk"] = resumption_psk(H, out["resumption_master_secret"], nonce)
    return out


@pytest.mark.parametrize("name", TRACES)
def test_transcript_hashes_match_trace(name: str) -> None:
    # Cross-check of the test's own transcript computation against the trace.
    trace = TRACES[name]
    published = trace.summary["transcript_hashes"]
    for key, value in published.items():
        assert trace.through(key.removeprefix("through_")).hex() == value, key
    for key, value in trace.summary["computed_by_us"]["transcript_hashes"].items():
        last = key.rsplit("through_", 1)[1].rstrip(")")
        assert trace.through(last).hex() == value, key


@pytest.mark.parametrize("name", TRACES)
def test_every_secret(name: str) -> None:
    trace = TRACES[name]
    # Every secret the trace publishes (Extract inputs aside, see test_extract_inputs).
    expected = {
        k: v
        for k, v in trace.summary["secrets"].items()
        if not k.endswith("_ikm") and k != "ecdhe_shared_secret"
    }
    ours = derived_secrets(trace)
    assert set(ours) == set(expected)
    for key in sorted(expected):
        assert ours[key].hex() == expected[key], key


@pytest.mark.parametrize("name", TRACES)
def test_extract_inputs(name: str) -> None:
    # The *_ikm values the RFC prints: early (PSK or zeros), (EC)DHE, zeros for master.
    secrets = TRACES[name].summary["secrets"]
    psk = psk_of(TRACES[name])
    assert (psk or bytes(32)).hex() == secrets["early_secret_ikm"]
    assert hkdf_extract(SHA256, b"", b(secrets["early_secret_ikm"])).hex() == secrets["early_secret"]
    assert secrets["handshake_secret_ikm"] == secrets["ecdhe_shared_secret"]
    assert hkdf_extract(
        SHA256, b(secrets["derived_for_handshake"]), b(secrets["handshake_secret_ikm"])
    ).hex() == secrets["handshake_secret"]


@pytest.mark.parametrize("name", TRACES)
def test_finished_verify_data(name: str) -> None:
    trace = TRACES[name]
    secrets = derived_secrets(trace)
    published = trace.summary["finished"]
    server = finished_verify_data(
        H, secrets["server_handshake_traffic_secret"], trace.before("server_Finished")
    )
    client = finished_verify_data(
        H, secrets["client_handshake_traffic_secret"], trace.before("client_Finished")
    )
    assert server.hex() == published["server_verify_data"]
    assert client.hex() == published["client_verify_data"]
    # The Finished messages end with verify_data (RFC 8446 §4.4.4).
    assert trace.message("server_Finished") == b"\x14\x00\x00\x20" + server
    assert trace.message("client_Finished") == b"\x14\x00\x00\x20" + client
    # finished_key itself
    for side in ("server", "client"):
        base = secrets[f"{side}_handshake_traffic_secret"]
        key = hkdf_expand_label(SHA256, base, b"finished", b"", 32)
        assert key.hex() == published[f"{side}_finished_key"]


def test_psk_binder_s4() -> None:
    """§4: binder over the ClientHello truncated before the binders list (§4.2.11.2)."""
    summary = RESUMED.summary
    psk = s3_resumption_psk()
    assert psk.hex() == summary["secrets"]["early_secret_ikm"]
    ks = KeySchedule(SUITE, psk)
    binder_key = ks.binder_key(external=False)
    assert binder_key.hex() == summary["secrets"]["binder_key"]
    truncated = b(summary["messages"]["ClientHello_prefix_without_binders"])
    binder_hash = SUITE.hash(truncated)
    assert binder_hash.hex() == summary["finished"]["binder_hash"]
    binder = finished_verify_data(H, binder_key, binder_hash)
    assert binder.hex() == summary["finished"]["psk_binder"]
    key = hkdf_expand_label(SHA256, binder_key, b"finished", b"", 32)
    assert key.hex() == summary["finished"]["binder_finished_key"]
    # The full ClientHello = truncated || binders<33..> = u16 33 || u8 32 || binder.
    ch = b(summary["messages"]["ClientHello"])
    assert ch == truncated + b"\x00\x21\x20" + binder
    # An external PSK would use a different binder key (§7.1).
    assert ks.binder_key(external=True) != binder_key


# traffic_keys entry -> which derived secret protects it
TRAFFIC_SECRET_OF = {
    "client_early_application_data": "client_early_traffic_secret",
    "server_handshake_data": "server_handshake_traffic_secret",
    "client_handshake_data": "client_handshake_traffic_secret",
    "server_application_data": "server_application_traffic_secret_0",
    "client_application_data": "client_application_traffic_secret_0",
}


@pytest.mark.parametrize("name", TRACES)
def test_traffic_key_iv(name: str) -> None:
    trace = TRACES[name]
    secrets = derived_secrets(trace)
    entries = trace.summary["traffic_keys"]
    assert entries
    for entry_name, entry in entries.items():
        secret = secrets[TRAFFIC_SECRET_OF[entry_name]]
        assert secret.hex() == entry["secret"], entry_name
        key, iv = traffic_key_iv(SUITE, secret)
        assert (key.hex(), iv.hex()) == (entry["key"], entry["iv"]), entry_name


def test_message_hash_s5() -> None:
    summary = HRR.summary
    synthetic = message_hash(H, b(summary["messages"]["ClientHello"]))
    assert synthetic.hex() == summary["computed_by_us"]["synthetic_message_hash_of_ClientHello1"]
    assert len(synthetic) == 4 + 32 and synthetic[0] == 254
    assert len(message_hash("sha384", b"x")) == 4 + 48


def test_quic_labels_rfc9001() -> None:
    """The label parameters serve QUIC too (RFC 9001 §5.1, App. A.1 and A.5)."""
    data = load("rfc9001_initial")
    a1 = data["A.1_keys"]
    initial = hkdf_extract(SHA256, b(data["constants"]["initial_salt"]), b(a1["client_dcid"]))
    assert initial.hex() == a1["initial_secret"]
    for side in ("client", "server"):
        secret = hkdf_expand_label(SHA256, initial, f"{side} in".encode(), b"", 32)
        assert secret.hex() == a1[side]["initial_secret"]
        key, iv = traffic_key_iv(SUITE, secret, b"quic key", b"quic iv")
        assert (key.hex(), iv.hex()) == (a1[side]["key"], a1[side]["iv"])
    a5 = data["A.5_chacha20_short_header"]
    chacha = SUITES[CipherSuite.CHACHA20_POLY1305_SHA256]
    key, iv = traffic_key_iv(chacha, b(a5["secret"]), b"quic key", b"quic iv")
    assert (key.hex(), iv.hex()) == (a5["key"], a5["iv"])
    assert next_traffic_secret(H, b(a5["secret"]), b"quic ku").hex() == a5["ku"]


def test_suites_table() -> None:
    assert set(SUITES) == {0x1301, 0x1302, 0x1303}
    rows = {
        s.suite: (s.hash_name, s.hash_len, s.key_len, s.iv_len, s.kernel_cipher)
        for s in SUITES.values()
    }
    assert rows == {
        CipherSuite.AES_128_GCM_SHA256: ("sha256", 32, 16, 12, TLS_CIPHER_AES_GCM_128),
        CipherSuite.AES_256_GCM_SHA384: ("sha384", 48, 32, 12, TLS_CIPHER_AES_GCM_256),
        CipherSuite.CHACHA20_POLY1305_SHA256: (
            "sha256",
            32,
            32,
            12,
            TLS_CIPHER_CHACHA20_POLY1305,
        ),
    }
    assert (TLS_CIPHER_AES_GCM_128, TLS_CIPHER_AES_GCM_256, TLS_CIPHER_CHACHA20_POLY1305) == (
        51,
        52,
        54,
    )
    for s in SUITES.values():
        assert s.empty_hash == hashlib.new(s.hash_name, b"").digest()
        h = s.new_hash()
        h.update(b"abc")
        assert h.copy().digest() == hashlib.new(s.hash_name, b"abc").digest()
        # the AEAD class takes a key of key_len
        s.aead(bytes(s.key_len)).encrypt(bytes(s.iv_len), b"", b"")


def _reference_expand_label(
    hash_name: str, secret: bytes, label: bytes, ctx: bytes, n: int
) -> bytes:
    # An independent spelling of §7.1 for the SHA-384 suite, which RFC 8448 does not cover.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    full = b"tls13 " + label
    info = n.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(ctx)]) + ctx
    algorithm = hashes.SHA384() if hash_name == "sha384" else hashes.SHA256()
    return HKDFExpand(algorithm, n, info).derive(secret)


def test_sha384_schedule_shape() -> None:
    suite = SUITES[CipherSuite.AES_256_GCM_SHA384]
    ks = KeySchedule(suite)
    assert len(ks.early_secret) == 48
    assert ks.early_secret == hkdf_extract(hashes.SHA384(), b"\x00" * 48, b"\x00" * 48)
    th = suite.hash(b"transcript")
    ks.handshake(b"\x01" * 32)
    c, s = ks.handshake_traffic_secrets(th)
    assert c == _reference_expand_label("sha384", ks.handshake_secret, b"c hs traffic", th, 48)
    assert s == _reference_expand_label("sha384", ks.handshake_secret, b"s hs traffic", th, 48)
    key, iv = traffic_key_iv(suite, c)
    assert (len(key), len(iv)) == (32, 12)
    ks.master()
    assert len(ks.application_traffic_secrets(th)[0]) == 48
    assert len(finished_verify_data("sha384", c, th)) == 48


def test_psk_ke_mode_uses_zero_ikm() -> None:
    a = KeySchedule(SUITE, b"\x07" * 32)
    b_ = KeySchedule(SUITE, b"\x07" * 32)
    a.handshake(None)
    b_.handshake(bytes(32))
    assert a.handshake_secret == b_.handshake_secret


def test_stage_order_is_enforced() -> None:
    ks = KeySchedule(SUITE)
    th = SUITE.empty_hash
    for call in (
        lambda: ks.handshake_traffic_secrets(th),
        ks.master,
        lambda: ks.application_traffic_secrets(th),
        lambda: ks.exporter_master_secret(th),
        lambda: ks.resumption_master_secret(th),
    ):
        with pytest.raises(TlsError) as info:
            call()
        assert info.value.alert == AlertDescription.internal_error


def test_verify_finished() -> None:
    data = b"\x01" * 32
    assert verify_finished(data, bytes(data))
    assert not verify_finished(data, b"\x01" * 31 + b"\x00")
    assert not verify_finished(data, data[:31])


def test_exporter() -> None:
    # §7.5 spelled out with the public helpers.
    ems = b"\x42" * 32
    out = export_keying_material(H, ems, b"EXPORTER-test", b"ctx", 40)
    inner = derive_secret(H, ems, b"EXPORTER-test", SUITE.empty_hash)
    assert out == hkdf_expand_label(SHA256, inner, b"exporter", SUITE.hash(b"ctx"), 40)
    assert len(out) == 40
