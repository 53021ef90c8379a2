"""`quichsd demo`: handshakes between our client and server, shown step by step.

First in memory through the TLS engine alone: a full handshake with certificate
verification, a resumption with 0-RTT from the ticket the first one left, and a
post-quantum hybrid key exchange reached through HelloRetryRequest. Then the same product
on loopback sockets (the kernel's IPPROTO_QUIC when present, the UDP simulation
otherwise): `quichsd server` and `quichsd client` doing a full handshake with data both
ways, then a resumption that carries 0-RTT data.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO

from . import echo
from .devcerts import NOW, demo_ca, leaf, write_pki
from .tls.certs import TrustStore
from .tls.client import ClientEngine
from .tls.config import Credentials, TlsConfig
from .tls.constants import CipherSuite, NamedGroup, SignatureScheme
from .tls.events import Event, HandshakeComplete, SendHandshake, SessionTicketReceived
from .tls.server import ServerEngine


def converse(client: ClientEngine, server: ServerEngine, now: float) -> Iterator[tuple[str, Event]]:
    """Deliver each side's handshake bytes to the other until both are quiet."""
    queue: list[tuple[str, Event]] = [("client", e) for e in client.start(now)]
    while queue:
        who, event = queue.pop(0)
        yield who, event
        if isinstance(event, SendHandshake):
            peer_name, peer = ("server", server) if who == "client" else ("client", client)
            queue += [(peer_name, e) for e in peer.receive(event.level, event.data, now)]


def _name(enum_type: type[IntEnum], value: int | None) -> str:
    if value is None:
        return "-"
    try:
        return enum_type(value).name
    except ValueError:
        return hex(value)


def describe(title: str, done: HandshakeComplete, flights: int) -> str:
    peer = done.peer_certificates[0].subject.rfc4514_string() if done.peer_certificates else "-"
    lines = [
        title,
        f"  version             TLS 1.3 (0x{done.version:04x}) over QUIC",
        f"  cipher suite        {_name(CipherSuite, done.cipher_suite)}",
        f"  key exchange group  {_name(NamedGroup, done.group)}",
        f"  ALPN                {done.alpn.decode() if done.alpn else '-'}",
        f"  signature scheme    {_name(SignatureScheme, done.signature_scheme)}",
        f"  server certificate  {peer}",
        f"  resumed             {'yes' if done.resumed else 'no'}",
        f"  0-RTT accepted      {'yes' if done.early_data_accepted else 'no'}",
        f"  CRYPTO writes       {flights}",
    ]
    return "\n".join(lines)


def run_socket_demo(out: TextIO) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ca_file, cert_file, key_file = write_pki(Path(tmp))
        port = _free_udp_port()
        ready, stop = threading.Event(), threading.Event()
        server = threading.Thread(target=echo.serve, daemon=True, args=(
            echo.ServerOptions(f"127.0.0.1:{port}", "smb", cert_file, key_file), out, ready, stop))
        server.start()
        ready.wait(5)
        session = os.path.join(tmp, "session.bin")
        client = echo.ClientOptions(f"127.0.0.1:{port}", "smb", cafile=ca_file, sni="localhost",
                                    session=session, data="hello over QUIC")
        print("4. over sockets: full handshake, then data both ways", file=out)
        echo.run_client(client, out)
        time.sleep(0.2)
        print("\n5. over sockets: resumption with 0-RTT data", file=out)
        client.early_data = "sent before the handshake finished"
        echo.run_client(client, out)
        time.sleep(0.2)
        stop.set()
        server.join(2)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_demo() -> int:
    now = NOW.timestamp()
    cert, key = leaf("p256")
    trust = TrustStore.from_certificates([demo_ca().cert])
    server_cfg = TlsConfig(
        alpn_protocols=[b"smb", b"h3"],
        credentials=Credentials([cert], key),
        session_ticket_key=os.urandom(64),
        enable_early_data=True,
        transport_parameters=b"\x0f\x08server01",
    )

    def client_cfg(**kw: Any) -> TlsConfig:
        return TlsConfig(alpn_protocols=[b"smb"], server_name="localhost", trust=trust,
                         transport_parameters=b"\x0f\x08client01", **kw)

    session = None
    for title, cfg, scfg in (
        ("1. full handshake (X25519, ECDSA P-256 certificate verified against the demo CA)",
         client_cfg(), server_cfg),
        ("2. resumption with 0-RTT, from the ticket of handshake 1", None, server_cfg),
        ("3. HelloRetryRequest to X25519MLKEM768 (the server accepts only the hybrid group)",
         client_cfg(), TlsConfig(alpn_protocols=[b"smb"], credentials=Credentials([cert], key),
                                 groups=[NamedGroup.X25519MLKEM768])),
    ):
        if cfg is None:
            cfg = client_cfg(session=session, enable_early_data=True)
        flights = 0
        done = None
        for who, event in converse(ClientEngine(cfg), ServerEngine(scfg), now):
            flights += isinstance(event, SendHandshake)
            if who == "client" and isinstance(event, HandshakeComplete):
                done = event
            if who == "client" and isinstance(event, SessionTicketReceived) and session is None:
                session = event.session
        assert done is not None
        print(describe(title, done, flights))
        print()
    run_socket_demo(sys.stdout)
    return 0
