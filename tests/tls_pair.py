"""Drive two in-memory TLS endpoints against each other (ours or aioquic's)."""
from __future__ import annotations

from dataclasses import dataclass, field

from quichsd.tls.client import ClientEngine
from quichsd.tls.engine import TlsEngine
from quichsd.tls.events import (
    ClientHelloReceived,
    HandshakeComplete,
    InstallSecret,
    PeerTransportParameters,
    SendHandshake,
    SessionTicketReceived,
)
from quichsd.tls.server import ServerEngine


@dataclass
class Side:
    engine: TlsEngine
    events: list = field(default_factory=list)

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]

    @property
    def complete(self) -> HandshakeComplete:
        (done,) = self.of(HandshakeComplete)
        return done

    def secrets(self) -> dict:
        return {(int(e.level), int(e.direction)): e.secret for e in self.of(InstallSecret)}

    @property
    def session(self):
        tickets = self.of(SessionTicketReceived)
        return tickets[0].session if tickets else None

    @property
    def peer_params(self) -> bytes:
        (p,) = self.of(PeerTransportParameters)
        return p.data


def run_pair(client_cfg, server_cfg, now: float, *, tamper=None, choose=None) -> tuple[Side, Side]:
    """Run a full handshake. `tamper(sender, event)` may return replacement bytes.
    `choose(info)`: the ServerChoice for a server that pauses at the ClientHello."""
    client = Side(ClientEngine(client_cfg))
    server = Side(ServerEngine(server_cfg))
    queue = [(client, e) for e in client.engine.start(now)]
    client.events.extend(e for _, e in queue)
    while queue:
        sender, event = queue.pop(0)
        if not isinstance(event, SendHandshake):
            continue
        data = event.data
        if tamper is not None:
            data = tamper("client" if sender is client else "server", event) or data
        target = server if sender is client else client
        out = target.engine.receive(event.level, data, now)
        if out and isinstance(out[-1], ClientHelloReceived):
            target.events.extend(out)
            out = target.engine.choose(choose(out[-1].info) if choose else None, now)
        if target.engine.flight_pending:  # a ServerHello sent alone (server_hello_first)
            out += target.engine.continue_flight(now)
        target.events.extend(out)
        queue.extend((target, e) for e in out)
    return client, server
