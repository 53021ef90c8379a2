"""Handshake cost: our engine, its crypto floor, and aioquic's TLS layer, in one run.

All three do the same full 1-RTT handshake in memory: X25519, ECDSA P-256 server
certificate, the client verifying the chain and the name, ALPN and QUIC transport
parameters. Ends with the summary line `handshake: engine/floor=R1 aioquic/engine=R2`.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, x25519  # noqa: E402
from cryptography.hazmat.primitives.hmac import HMAC  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from cryptography.x509 import verification  # noqa: E402

from quichsd.tls.certs import TrustStore  # noqa: E402
from quichsd.tls.client import ClientEngine  # noqa: E402
from quichsd.tls.config import Credentials, TlsConfig  # noqa: E402
from quichsd.tls.constants import NamedGroup  # noqa: E402
from quichsd.tls.events import SendHandshake  # noqa: E402
from quichsd.tls.server import ServerEngine  # noqa: E402
from tests.pki import NOW, leaf, test_ca  # noqa: E402

TP = bytes(64)
T = NOW.timestamp()


def engine_setup():
    cert, key = leaf("p256")
    trust = TrustStore.from_certificates([test_ca().cert])
    client_cfg = TlsConfig(alpn_protocols=[b"h3"], server_name="localhost", trust=trust,
                           transport_parameters=TP, groups=[NamedGroup.X25519])
    server_cfg = TlsConfig(alpn_protocols=[b"h3"], credentials=Credentials([cert], key),
                           transport_parameters=TP)

    def handshake() -> None:
        client, server = ClientEngine(client_cfg), ServerEngine(server_cfg)
        queue = [(server, e) for e in client.start(T)]
        while queue:
            target, event = queue.pop()
            if type(event) is SendHandshake:
                other = client if target is server else server
                queue.extend((other, e) for e in reversed(target.receive(event.level, event.data, T)))
        assert client.handshake_complete and server.handshake_complete

    return handshake


def floor_setup():
    """The bare cryptography (and hashlib) calls our handshake makes, nothing else."""
    cert, key = leaf("p256")
    leaf_der = cert.public_bytes(Encoding.DER)
    store = verification.Store([test_ca().cert])
    when = datetime.datetime.fromtimestamp(T, datetime.UTC)
    sha256 = hashes.SHA256()
    zeros = bytes(32)
    early = HKDF.extract(sha256, b"", zeros)  # constant, as in the engine
    messages = [bytes(200), bytes(100), bytes(100), bytes(600), bytes(80), bytes(36), bytes(36)]

    def expand(secret: bytes, n: int = 32) -> bytes:
        return HKDFExpand(sha256, n, b"label" + bytes(32)).derive(secret)

    def schedule(shared: bytes) -> None:
        derived = expand(early)
        hs = HKDF.extract(sha256, derived, shared)
        c_hs, s_hs = expand(hs), expand(hs)
        master = HKDF.extract(sha256, expand(hs), zeros)
        expand(master), expand(master), expand(master)  # c ap, s ap, res master
        for base in (s_hs, c_hs):  # Finished keys and MACs
            mac = HMAC(expand(base), sha256)
            mac.update(bytes(32))
            mac.finalize()

    def transcript() -> None:
        h = hashlib.sha256()
        for m in messages:
            h.update(m)
            h.copy().digest()

    def verify_peer() -> x509.Certificate:
        peer = x509.load_der_x509_certificate(leaf_der)
        verification.PolicyBuilder().store(store).time(when).build_server_verifier(
            verification.DNSName("localhost")).verify(peer, [])
        return peer

    return lambda: pair_of_calls(key, transcript, schedule, verify_peer)


def pair_of_calls(key, transcript, schedule, verify_peer) -> None:  # noqa: ANN001
    """One client+server handshake's crypto: key shares, transcript, schedule, signature, chain."""
    c_priv = x25519.X25519PrivateKey.generate()
    c_pub = c_priv.public_key().public_bytes_raw()
    s_priv = x25519.X25519PrivateKey.generate()  # server
    s_pub = s_priv.public_key().public_bytes_raw()
    shared = s_priv.exchange(x25519.X25519PublicKey.from_public_bytes(c_pub))
    transcript()
    schedule(shared)
    signature = key.sign(bytes(130), ec.ECDSA(hashes.SHA256()))
    shared2 = c_priv.exchange(x25519.X25519PublicKey.from_public_bytes(s_pub))  # client
    transcript()
    schedule(shared2)
    peer = verify_peer()
    peer.public_key().verify(signature, bytes(130), ec.ECDSA(hashes.SHA256()))


def cached_floor_setup():
    """The floor again, given the caches the engine keeps across handshakes: the verifier
    (per store, name and second), the parsed peer certificate and its key, the constant
    derived-from-early secret; and without what the engine skips when no ticket is used
    (the resumption master secret) and without hash copies. Printed for reference; the
    summary line keeps the from-scratch floor above."""
    cert, key = leaf("p256")
    peer = x509.load_der_x509_certificate(cert.public_bytes(Encoding.DER))
    peer.public_key()
    when = datetime.datetime.fromtimestamp(T, datetime.UTC)
    verifier = verification.PolicyBuilder().store(verification.Store([test_ca().cert])).time(when) \
        .build_server_verifier(verification.DNSName("localhost"))
    sha256 = hashes.SHA256()
    zeros = bytes(32)

    def expand(secret: bytes, n: int = 32) -> bytes:
        return HKDFExpand(sha256, n, b"label" + bytes(32)).derive(secret)

    derived = expand(HKDF.extract(sha256, b"", zeros))
    messages = [bytes(200), bytes(100), bytes(100), bytes(600), bytes(80), bytes(36), bytes(36)]

    def transcript() -> None:
        h = hashlib.sha256()
        for m in messages:
            h.update(m)
            h.digest()

    def schedule(shared: bytes) -> None:
        hs = HKDF.extract(sha256, derived, shared)
        c_hs, s_hs = expand(hs), expand(hs)
        master = HKDF.extract(sha256, expand(hs), zeros)
        expand(master), expand(master)
        for base in (s_hs, c_hs):
            mac = HMAC(expand(base), sha256)
            mac.update(zeros)
            mac.finalize()

    def verify_peer() -> x509.Certificate:
        verifier.verify(peer, [])
        return peer

    return lambda: pair_of_calls(key, transcript, schedule, verify_peer)


def aioquic_setup():
    try:
        from aioquic.buffer import Buffer
        from aioquic.tls import Context, Epoch, State
    except ImportError:
        return None
    cert, key = leaf("p256")
    cadata = test_ca().cert.public_bytes(Encoding.PEM)

    def handshake() -> None:
        client = Context(is_client=True, alpn_protocols=["h3"], cadata=cadata, server_name="localhost")
        client.handshake_extensions = [(0x39, TP)]
        server = Context(is_client=False, alpn_protocols=["h3"])
        server.certificate, server.certificate_private_key = cert, key
        server.handshake_extensions = [(0x39, TP)]
        for ctx in (client, server):
            ctx.update_traffic_key_cb = lambda *args: None
        bufs = {ctx: {e: Buffer(capacity=8192) for e in Epoch} for ctx in (client, server)}
        client.handle_message(b"", bufs[client])
        sender, receiver = client, server
        while sender.state != State.CLIENT_POST_HANDSHAKE or receiver.state != State.SERVER_POST_HANDSHAKE:
            moved = False
            for epoch, buf in bufs[sender].items():
                data = buf.data
                if data:
                    buf.seek(0)
                    bufs[sender][epoch] = Buffer(capacity=8192)
                    receiver.handle_message(data, bufs[receiver])
                    moved = True
            sender, receiver = receiver, sender
            if not moved and not any(b.data for b in bufs[sender].values()):
                break
        assert client.state == State.CLIENT_POST_HANDSHAKE and server.state == State.SERVER_POST_HANDSHAKE

    return handshake


def measure(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("-n", type=int, default=200, help="handshakes per round and contender")
    args = parser.parse_args()
    contenders = {"engine": engine_setup(), "floor": floor_setup(), "floor-cached": cached_floor_setup()}
    aio = aioquic_setup()
    if aio is not None:
        contenders["aioquic"] = aio
    for fn in contenders.values():
        measure(fn, 20)  # warm-up
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):  # interleaved, so drift hits all alike
        for name, fn in contenders.items():
            results[name].append(measure(fn, args.n))
    med = {name: statistics.median(v) for name, v in results.items()}
    for name, value in med.items():
        print(f"{name:12s} {value * 1e3:7.3f} ms per client+server handshake")
    print(f"engine / floor-cached = {med['engine'] / med['floor-cached']:.2f} (for reference: a floor that"
          " shares the engine's cross-handshake caches)")
    r1 = med["engine"] / med["floor"]
    r2 = med["aioquic"] / med["engine"] if "aioquic" in med else float("nan")
    print(f"handshake: engine/floor={r1:.2f} aioquic/engine={r2:.2f}")


if __name__ == "__main__":
    main()
