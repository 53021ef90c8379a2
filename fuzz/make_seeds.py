"""Write the seed corpora of fuzz/corpus/ (python -m fuzz.make_seeds).

Where the seeds come from:
    RFC vectors     tests/vectors (RFC 8448 handshake messages, RFC 9001 and RFC 9369
                    packets and payloads, RFC 9000 varints)
    our engines     every message of the reproducible handshakes of fuzz/handshakes.py,
                    whole, as flights, and extension by extension
    the simulation  real in-memory QUIC handshakes (v1 and v2) of our SimConnection with our
                    engines: every datagram, every decrypted packet payload, every transport
                    parameter blob received
    the daemon      netlink messages laid out by our own encoder, as the kernel sends them;
                    the README's configuration sample and one using every group and key

The corpus of each target is replaced (files named by the hash of their content); the
seeds are small by design (the whole is well under 1 MB).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from quichsd.tls.constants import ExtensionType as ET
from quichsd.tls.constants import HandshakeType as HT

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VECTORS = ROOT / "tests" / "vectors"
MAX_SEED = 4096  # libFuzzer's default max_len for a corpus of small files


def _hex(s: str) -> bytes:
    return bytes.fromhex(s)


def _vector(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def _split(flight: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 4 <= len(flight):
        end = pos + 4 + int.from_bytes(flight[pos + 1:pos + 4], "big")
        out.append(flight[pos:end])
        pos = end
    return out


# -- TLS -------------------------------------------------------------------------------------


def _rfc8448_messages() -> Iterator[bytes]:
    for path in sorted(VECTORS.glob("rfc8448_*.json")):
        for name, value in json.loads(path.read_text())["summary"]["messages"].items():
            if "prefix" not in name:
                yield _hex(value)


def _engine_flights() -> list[tuple[str, int, bytes]]:
    from .handshakes import MODES, recorded

    return [(mode, k, data) for mode in MODES for k, (_, _, data) in enumerate(recorded(mode))]


# extension type -> the tls_messages check index that decodes its body (by message type where
# the body differs between ClientHello and the server's messages).
def _extension_check(msg_type: int, ext_type: int) -> int | None:
    hello = msg_type == HT.CLIENT_HELLO
    table = {
        ET.SERVER_NAME: 2 if hello else None,
        ET.SUPPORTED_GROUPS: 3, ET.SIGNATURE_ALGORITHMS: 3, ET.SIGNATURE_ALGORITHMS_CERT: 3,
        ET.ALPN: 4,
        ET.SUPPORTED_VERSIONS: 5 if hello else 6,
        ET.KEY_SHARE: 7 if hello else 8,
        ET.PSK_KEY_EXCHANGE_MODES: 9,
        ET.PRE_SHARED_KEY: 10 if hello else 6,
        ET.COOKIE: 11,
        ET.EARLY_DATA: 12 if msg_type == HT.NEW_SESSION_TICKET else None,
    }
    return table.get(ext_type)


def tls_messages() -> Iterator[bytes]:
    from quichsd.tls.messages import decode_message

    messages = list(_rfc8448_messages())
    flights = _engine_flights()
    for _, _, flight in flights:
        messages += _split(flight)
    for raw in messages:
        yield b"\x00" + raw
        try:
            msg = decode_message(raw)
        except Exception:  # noqa: BLE001 - a vector we do not take is still a seed
            continue
        for ext_type, body in getattr(msg, "extensions", {}).items():
            check = _extension_check(raw[0], ext_type)
            if check is not None:
                yield bytes((check,)) + body
    for _, k, flight in flights:
        yield b"\x01" + bytes((1 + k * 37 % 200,)) + flight
    from .handshakes import _session

    yield b"\x0d" + _session().encode()  # what a client keeps to resume


def tls_engine() -> Iterator[bytes]:
    from .handshakes import recorded
    from .tls_engine import FRESH_CLIENT, SCENARIOS, header

    for scenario in SCENARIOS:
        if scenario == FRESH_CLIENT:
            yield header(scenario) + recorded("full")[1][2]
            continue
        mode, k = scenario
        _, _, data = recorded(mode)[k]
        yield header(scenario) + data
        if len(_split(data)) > 1:
            yield header(scenario, cut=len(_split(data)[0]) % 256) + data


# -- QUIC: a real simulated handshake, recorded ------------------------------------------------


def _sim_capture() -> dict[str, list[bytes]]:
    """Datagrams, decrypted payloads and transport parameter blobs of real handshakes of our
    simulation (tests/sim/driver.py: SimConnection + our engines), v1 and v2."""
    from quichsd.sock.sim import frames, tparams
    from tests.sim import driver as sim_driver

    seen: dict[str, list[bytes]] = {"datagrams": [], "payloads": [], "tparams": []}
    real_parse, real_blob, real_recv = frames.parse_frames, tparams.parse_peer_blob, sim_driver.SimAgent.recv
    server_recv = sim_driver.SimServer.recv

    def parse_frames(payload: bytes):  # type: ignore[no-untyped-def]
        seen["payloads"].append(bytes(payload))
        return real_parse(payload)

    def parse_peer_blob(blob: bytes, **kw):  # type: ignore[no-untyped-def]
        seen["tparams"].append((b"\x01" if kw.get("we_are_client") else b"\x00") + bytes(blob))
        return real_blob(blob, **kw)

    def client_recv(self, data: bytes, now: float) -> None:  # type: ignore[no-untyped-def]
        seen["datagrams"].append(bytes(data))
        real_recv(self, data, now)

    def sim_server_recv(self, data: bytes, now: float) -> None:  # type: ignore[no-untyped-def]
        seen["datagrams"].append(bytes(data))
        server_recv(self, data, now)

    frames.parse_frames, tparams.parse_peer_blob = parse_frames, parse_peer_blob
    sim_driver.SimAgent.recv, sim_driver.SimServer.recv = client_recv, sim_server_recv  # type: ignore[method-assign]
    try:
        for version in (sim_driver.V1, sim_driver.V2):
            sim_driver.handshake(sim_driver.sim_client(version=version), sim_driver.SimServer())
    finally:
        frames.parse_frames, tparams.parse_peer_blob = real_parse, real_blob
        sim_driver.SimAgent.recv, sim_driver.SimServer.recv = real_recv, server_recv  # type: ignore[method-assign]
    return seen


_SIM: dict[str, list[bytes]] = {}


def sim() -> dict[str, list[bytes]]:
    if not _SIM:
        _SIM.update(_sim_capture())
    return _SIM


def _quic_vectors() -> Iterator[tuple[str, bytes]]:
    for name in ("rfc9001_initial.json", "rfc9369_v2.json"):
        v = _vector(name)
        yield "datagram", _hex(v["A.2_client_initial"]["protected_packet"])
        yield "datagram", _hex(v["A.3_server_initial"]["protected_packet"])
        yield "datagram", _hex(v["A.4_retry"]["retry_packet"])
        yield "short", _hex(v["A.5_chacha20_short_header"]["protected_packet"])
        yield "payload", _hex(v["A.2_client_initial"]["derived_by_us"]["unprotected_payload_full"])
        yield "payload", _hex(v["A.3_server_initial"]["payload"])
        yield "tparams", b"\x00" + _hex(
            v["A.2_client_initial"]["derived_by_us"]["quic_transport_parameters_extension_0x39"])


def quic_frames() -> Iterator[bytes]:
    yield from (p for kind, p in _quic_vectors() if kind == "payload")
    yield from sim()["payloads"]


def quic_connection() -> Iterator[bytes]:
    from quichsd.sock.sim import frames as fr

    def packet(level: int, payload: bytes) -> bytes:
        return bytes((level,)) + len(payload).to_bytes(2, "big") + payload

    for payload in sim()["payloads"]:
        for level in range(3):
            yield packet(level, payload[:1400])
    # A conversation on the established connection: streams, flow control, CIDs, close.
    app = [
        fr.encode_stream(0, 0, b"hello", False) + fr.encode_stream(2, 0, b"uni", True),
        fr.Ack(((0, 1),), 3).encode() + fr.MaxData(1 << 20).encode()
        + fr.MaxStreamData(0, 1 << 16).encode(),
        fr.encode_stream(0, 5, b" world", True) + fr.MaxStreams(False, 10).encode() + fr.Ping().encode(),
        fr.NewConnectionId(1, 0, b"newcid01", bytes(16)).encode() + fr.RetireConnectionId(0).encode(),
        fr.ResetStream(4, 7, 0).encode() + fr.StopSending(0, 9).encode()
        + fr.PathChallenge(bytes(8)).encode(),
        fr.DataBlocked(100).encode() + fr.StreamDataBlocked(0, 5).encode()
        + fr.StreamsBlocked(True, 3).encode(),
        fr.ConnectionClose(0, 0, b"bye", True).encode(),
    ]
    yield b"".join(packet(2, p) for p in app)
    yield packet(1, b"\x01" + fr.Ack(((0, 1),)).encode()) + packet(0, b"\x06\x00\x04\x14\x00\x00\x00")


def transport_params() -> Iterator[bytes]:
    from .handshakes import CLIENT_TP, SERVER_TP

    yield from (p for kind, p in _quic_vectors() if kind == "tparams")
    yield b"\x00" + CLIENT_TP
    yield b"\x01" + SERVER_TP
    # The extension as it crossed the wire in the RFC 8448 hellos and ours.
    from quichsd.tls.messages import decode_message

    for raw in list(_rfc8448_messages()) + [m for _, _, f in _engine_flights() for m in _split(f)]:
        if raw[0] in (HT.CLIENT_HELLO, HT.ENCRYPTED_EXTENSIONS):
            body = getattr(decode_message(raw), "extensions", {}).get(ET.QUIC_TRANSPORT_PARAMETERS)
            if body is not None:
                yield (b"\x00" if raw[0] == HT.CLIENT_HELLO else b"\x01") + body
    yield from sim()["tparams"]


def quic_packets() -> Iterator[bytes]:
    for kind, data in _quic_vectors():
        if kind == "datagram":
            yield b"\x00\x08" + data
        elif kind == "short":
            yield b"\x00\x00" + data
    for datagram in sim()["datagrams"]:
        yield b"\x00\x08" + datagram
    # Built packets: shape (v1/v2, short, type), CID lengths, token length, pn, payload.
    for i, payload in enumerate(sim()["payloads"][:12]):
        shape = (i & 1) | (2 if i % 4 == 3 else 0) | ((i % 3) << 2) | (0x20 if i % 2 else 0)
        yield b"\x01" + bytes((shape, 8, 8, 4)) + b"\x11" * 20 + b"\x00\x00\x01\x00\x05" + payload[:600]
    v = _vector("rfc9000_varint_tp.json")["varint"]
    yield b"\x02" + b"".join(_hex(e["encoded"]) for e in v["appendix_a1_examples"])
    yield b"\x03\x01" + struct.pack(">QII", 0xA82F30EA, 0x9B32 - 0xA82F30EA % 0x10000, 5)


# -- daemon ------------------------------------------------------------------------------------


def netlink_attrs() -> Iterator[bytes]:
    from quichsd.daemon import netlink as nl

    accept = bytes(nl.encode(nl.accept_msg, nl.HANDSHAKE_CMD_ACCEPT, [
        ("HANDSHAKE_A_ACCEPT_SOCKFD", 7),
        ("HANDSHAKE_A_ACCEPT_MESSAGE_TYPE", nl.HANDSHAKE_MSG_TYPE_CLIENTHELLO),
        ("HANDSHAKE_A_ACCEPT_TIMEOUT", 10000),
        ("HANDSHAKE_A_ACCEPT_AUTH_MODE", nl.HANDSHAKE_AUTH_X509),
        ("HANDSHAKE_A_ACCEPT_PEER_IDENTITY", 0x1234),
        ("HANDSHAKE_A_ACCEPT_PEER_IDENTITY", 0x5678),
        ("HANDSHAKE_A_ACCEPT_CERTIFICATE",
         {"attrs": [("HANDSHAKE_A_X509_CERT", 11), ("HANDSHAKE_A_X509_PRIVKEY", 12)]}),
        ("HANDSHAKE_A_ACCEPT_PEERNAME", "server.example"),
        ("HANDSHAKE_A_ACCEPT_KEYRING", 99),
    ]))
    ready = bytes(nl.encode(nl.ready_msg, nl.HANDSHAKE_CMD_READY, [("HANDSHAKE_A_ACCEPT_HANDLER_CLASS", 1)]))
    # NLMSG_ERROR (type 2): its header, the errno, then the header of the request it answers
    error_header = struct.pack("=IHHII", 36, 2, 0, 1, 0)
    request_header = struct.pack("=IHHII", 16, 0, 0, 0, 0)
    ack = error_header + struct.pack("=i", 0) + request_header
    eagain = error_header + struct.pack("=i", -11) + request_header
    done = bytes(nl.done_request(0, 7, [0x1234], ["tag"]))
    yield from (accept, ready, ack, eagain, done, accept + ack, nl.accept_request())


def daemon_config() -> Iterator[bytes]:
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```ini\n(.*?)```", readme, re.S):
        yield block.encode()
    yield (
        b"# every group and key the daemon reads\n"
        b"[debug]\nloglevel=1\ntls=0\nnl=2\ndelay_done=0\n\n"
        b"[authenticate]\nkeyrings=.nvme;.nfs\\;x;\n\n"
        b"[authenticate.client]\nx509.truststore=/etc/pki/ca.pem\nx509.crl=/etc/pki/crl.pem\n"
        b"x509.certificate=/etc/pki/c.pem\nx509.private_key=pkcs11:token=x\n\n"
        b"[authenticate.server]\nx509.certificate=/etc/pki/s.pem\nx509.private_key=/etc/pki/s.key\n"
        b"x509.pq.certificate=/etc/pki/pq.pem\nx509.pq.private_key=/etc/pki/pq.key\n\n"
        b"[quichsd]\nworkers=4\ndbus=none\nkeylog=\nuser=nobody\ngroup=nogroup\ndefault_timeout=2.5\n\n"
        b"[alpn:smb sni:fs.example]\ncertificate=/a.pem\nprivate_key=/a.key\ntruststore=/t.pem\n"
        b"[alpn:nfs]\nname[de]=x\nflag=true\n"
    )
    yield b"[authenticate.client]\r\nx509.truststore = /etc/a b\\s\\t\\n\r\n"


# -- writing -----------------------------------------------------------------------------------

SEEDS = {
    "tls_messages": tls_messages,
    "tls_engine": tls_engine,
    "transport_params": transport_params,
    "quic_packets": quic_packets,
    "quic_frames": quic_frames,
    "quic_connection": quic_connection,
    "netlink_attrs": netlink_attrs,
    "daemon_config": daemon_config,
}


def write(target: str, seeds: Iterable[bytes]) -> int:
    directory = HERE / "corpus" / target
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    names = set()
    for seed in seeds:
        seed = seed[:MAX_SEED]
        name = hashlib.sha1(seed).hexdigest()[:16]
        if name not in names:
            names.add(name)
            (directory / name).write_bytes(seed)
    return len(names)


def main(argv: list[str]) -> int:
    targets = argv or list(SEEDS)
    for target in targets:
        count = write(target, SEEDS[target]())
        size = sum(p.stat().st_size for p in (HERE / "corpus" / target).iterdir())
        print(f"make_seeds: {target}: {count} seeds, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
