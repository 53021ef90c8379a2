"""`quichsd demo`: handshakes between our client and server, shown step by step.

Runs in memory through the TLS engine (no sockets): a full handshake with certificate
verification, then a resumption with 0-RTT from the ticket the first one left, then a
post-quantum hybrid key exchange reached through HelloRetryRequest.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

from .devcerts import NOW, demo_ca, leaf
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


def _name(enum_type: type, value: int | None) -> str:
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

    def client_cfg(**kw: object) -> TlsConfig:
        return TlsConfig(alpn_protocols=[b"smb"], server_name="localhost", trust=trust,
                         transport_parameters=b"\x0f\x08client01", **kw)  # type: ignore[arg-type]

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
    return 0
