"""One check's connection: our simulation's client connection and TLS engine, with the
check's rewriter in place, over a UDP socket of its own, until the server closes the
connection, our side does, or the check's time is up.

The probe does no waiting itself: the runner calls `on_readable` and `on_time` from its
one selector loop, so all checks of a run share one thread.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from ..quic.errors import QuicErrorCode
from ..quic.transport_params import TransportParameters
from ..sock.sim.connection import SimConnection
from ..sock.sim.state import ConnState
from ..tls.certs import TrustStore
from ..tls.client import ClientEngine
from ..tls.config import TlsConfig
from ..tls.constants import CryptoLevel
from ..tls.errors import TlsError
from ..tls.events import Event, InstallSecret, PeerTransportParameters, SendHandshake
from . import DEFAULT_TIMEOUT
from .checks import Check
from .mischief import PeerView
from .outcome import Observed, Outcome

__all__ = ["Probe", "Settings", "Target"]

RECV_SIZE = 65536


@dataclass(frozen=True)
class Target:
    family: int
    address: tuple[Any, ...]  # a resolved sockaddr
    name: str  # as given: SNI and the name the certificate must match


@dataclass(frozen=True)
class Settings:
    alpns: tuple[bytes, ...]
    verify: bool = True
    trust: TrustStore | None = None
    timeout: float = DEFAULT_TIMEOUT  # per check


class Probe:
    """One connection carrying out one check."""

    def __init__(self, check: Check, target: Target, settings: Settings, now: float) -> None:
        self.check = check
        self.started = now
        self.deadline = now + settings.timeout
        self.observed: Observed | None = None
        self.peer = PeerView()
        self.sock = socket.socket(target.family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.connect(target.address)
            rewriter = check.rewriter(self.peer)
            self.conn = SimConnection(is_client=True, now=now, peer_addr=target.address)
            self.conn.send_rewriter = rewriter
            blob = rewriter.rewrite_transport_parameters(self.conn.local_transport_params_blob())
            self.engine = ClientEngine(TlsConfig(
                alpn_protocols=list(settings.alpns), server_name=target.name, verify_peer=settings.verify,
                trust=settings.trust, transport_parameters=blob, client_hello_rewrite=rewriter.client_hello,
            ))
        except BaseException:
            self.sock.close()
            raise
        self._step(now, lambda: self._apply(self.engine.start(time.time())))

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    @property
    def wakeup(self) -> float:
        timer = self.conn.get_timer()
        return self.deadline if timer is None else min(timer, self.deadline)

    # -- driven by the runner ------------------------------------------------------------

    def on_readable(self, now: float) -> None:
        self._step(now, self._read)

    def on_time(self, now: float) -> None:
        if self.observed is not None:
            return
        timer = self.conn.get_timer()
        if timer is not None and timer <= now:
            self._step(now, lambda: self.conn.handle_timer(now))
        if self.observed is None and now >= self.deadline:
            self.observed = Observed(Outcome.TIMEOUT, handshake_complete=self.engine.handshake_complete)

    # -- one step: do it, feed the engine, send, see whether it ended --------------------

    def _step(self, now: float, action: Any) -> None:
        if self.observed is not None:
            return
        try:
            action()
            self._feed_engine()
            self.peer.handshake_confirmed = self.conn.handshake_confirmed
        except TlsError as exc:
            self.conn.close(exc.quic_error, exc.reason.encode(), app=False)
        except OSError as exc:  # the connection refused a step (SimError), or the socket failed
            if self.conn.state is not ConnState.CLOSED:
                self._end_locally(exc)
                return
        self._flush(now)
        self._see_end()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return
            self.conn.receive_datagram(data, self.conn.peer_addr, time.monotonic())
            if self.conn.state is ConnState.CLOSED:
                return

    def _feed_engine(self) -> None:
        while self.conn.state is not ConnState.CLOSED:
            item = self.conn.recv_crypto(RECV_SIZE)
            if item is None:
                return
            level, data, _ = item
            self._apply(self.engine.receive(CryptoLevel(level), data, time.time()))

    def _apply(self, events: list[Event]) -> None:
        """As the handshake driver does (handshake.py): secrets and transport parameters
        as they come, then the handshake messages."""
        sends = []
        for event in events:
            if type(event) is SendHandshake:
                sends.append(event)
            elif type(event) is InstallSecret:
                self.conn.install_secret(int(event.level), bool(event.direction), event.cipher_type,
                                         event.secret)
            elif type(event) is PeerTransportParameters:
                self._learn(event.data)
                self.conn.set_peer_transport_params_blob(event.data)
        for send in sends:
            self.conn.send_crypto(int(send.level), send.data)

    def _learn(self, blob: bytes) -> None:
        try:
            self.peer.params = TransportParameters.decode(blob, "server")
        except Exception:  # the connection's own parse says what is wrong with them
            self.peer.params = None

    def _flush(self, now: float) -> None:
        for datagram, _ in self.conn.datagrams_to_send(now):
            try:
                self.sock.send(datagram)
            except BlockingIOError:
                return  # a full socket buffer is a lost datagram
            except OSError:
                return  # e.g. ECONNREFUSED from an earlier ICMP error; recv reports it

    def _see_end(self) -> None:
        conn = self.conn
        close = conn.peer_close
        complete = self.engine.handshake_complete
        if close is not None:
            self.observed = Observed(Outcome.CLOSED, close.error_code, close.app,
                                     close.reason.decode(errors="replace"), complete)
        elif conn.state is ConnState.CLOSED:
            code, _, reason = conn.close_info or (0, 0, b"")
            self.observed = Observed(Outcome.LOCAL, code, False,
                                     reason.decode(errors="replace") or "idle timeout",
                                     complete)

    def _end_locally(self, exc: OSError) -> None:
        if isinstance(exc, ConnectionRefusedError):
            reason = "ICMP port unreachable: is a QUIC server listening there?"
        else:
            reason = str(exc)
        self.conn.close(QuicErrorCode.INTERNAL_ERROR, reason.encode()[:63], app=False)
        self.observed = Observed(Outcome.LOCAL, QuicErrorCode.INTERNAL_ERROR, False, reason,
                                 self.engine.handshake_complete)
