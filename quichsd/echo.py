"""`quichsd server` and `quichsd client`: handshakes on real sockets, then stream echo."""
from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import abi
from .handshake import HandshakeConfig, HandshakeError, HandshakeResult, quic_handshake, read_psk_file
from .sock import QuicSocket
from .tls.constants import CipherSuite, NamedGroup

log = logging.getLogger(__name__)


def parse_address(text: str) -> tuple[int, tuple[str, int]]:
    """`host:port` or `[v6]:port` -> (family, (host, port))."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected ADDR:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def summary(result: HandshakeResult) -> str:
    def name(enum: Any, value: int | None) -> str:
        try:
            return enum(value).name if value is not None else "-"
        except ValueError:
            return hex(value or 0)

    if result.peer_certificates:
        peer = result.peer_certificates[0].subject.rfc4514_string()
    elif result.psk_identity:
        peer = "psk:" + result.psk_identity.decode(errors="replace")
    else:
        peer = "-"
    return (
        f"alpn={result.alpn} suite={name(CipherSuite, result.cipher_suite)} "
        f"group={name(NamedGroup, result.group)} peer={peer} "
        f"resumed={'yes' if result.resumed else 'no'} 0rtt={'yes' if result.early_data_accepted else 'no'}"
    )


@dataclass
class ServerOptions:
    listen: str
    alpn: str
    cert: str | None = None
    key: str | None = None
    psk: str | None = None
    backend: str = "auto"
    early_data: bool = True
    max_connections: int = 0  # 0: serve forever
    retry: bool = False  # validate_peer_address: every token-less client is sent a Retry


def serve(opts: ServerOptions, out: TextIO, ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> int:
    family, address = parse_address(opts.listen)
    listener = QuicSocket(family, backend=opts.backend)
    listener.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, opts.alpn.encode())
    if opts.retry:  # RFC 9000 §8.1.2, spec kernel-quic-abi §1.4 (CONFIG)
        listener.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(validate_peer_address=1))
    listener.bind(address)
    listener.listen(16)
    listener.settimeout(0.2)
    config = HandshakeConfig(
        server=True, alpns=opts.alpn.split(","), cert_file=opts.cert, key_file=opts.key,
        psks=read_psk_file(opts.psk) if opts.psk else (), early_data=opts.early_data, timeout=10,
    )
    print(f"listening on {opts.listen} ({listener.backend_name} backend)", file=out, flush=True)
    if ready is not None:
        ready.set()
    served = 0
    try:
        while stop is None or not stop.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                # One connection's trouble (the kernel's ECONNABORTED, a short ENOMEM or
                # EMFILE...) never ends the server; a listener that is gone does.
                if exc.errno in _LISTENER_GONE:
                    raise
                log.warning("accept failed, still listening: %s", exc)
                time.sleep(0.05)  # no busy loop on a lasting condition (EMFILE)
                continue
            served += 1
            threading.Thread(target=_serve_one, args=(conn, peer, config, out), daemon=True).start()
            if opts.max_connections and served >= opts.max_connections:
                break
    finally:
        listener.close()
    return 0


_LISTENER_GONE = frozenset({errno.EBADF, errno.EINVAL, errno.ENOTSOCK})


def _name(peer: Any) -> str:
    """`host:port` of an accepted peer; "-" when accept() could not tell (QuicSocket.accept)."""
    if not peer:
        return "-"
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _serve_one(conn: QuicSocket, peer: Any, config: HandshakeConfig, out: TextIO) -> None:
    """One connection, on its own thread: whatever happens here ends this connection only."""
    name = _name(peer)
    with conn:
        try:
            result = quic_handshake(conn, config)
        except HandshakeError as exc:
            print(f"handshake with {name} failed: {exc.strerror}", file=out, flush=True)
            return
        except Exception as exc:  # a bug, not the peer: say so, but keep serving the others
            log.error("handshake with %s: unexpected %s: %s", name, type(exc).__name__, exc)
            print(f"handshake with {name} failed: {type(exc).__name__}", file=out, flush=True)
            return
        closed = " (the client has closed the connection already)" if result.peer_closed else ""
        print(f"handshake with {name} succeeded: {summary(result)}{closed}", file=out, flush=True)
        if result.peer_closed:
            return
        conn.settimeout(30)
        try:
            echo_streams(conn, name)
        except Exception as exc:
            log.error("echo with %s: unexpected %s: %s", name, type(exc).__name__, exc)


def _client_uni(stream_id: int) -> bool:
    """A client-initiated unidirectional stream: receive-only for the server (RFC 9000
    §2.1: bit 0 = server-initiated, bit 1 = unidirectional)."""
    return stream_id & 0x3 == 0x2


def echo_streams(conn: QuicSocket, name: str = "-") -> None:
    """Echo every stream until the client closes the connection (or 30 s of silence).

    Data on a bidirectional stream goes back on it. A client-initiated unidirectional
    stream cannot carry an answer (libquic's sample client sends on stream 2), so each one
    gets a new server-initiated bidirectional stream (1, 5, 9, ...) for its echo, FIN for
    FIN, as libquic's sample server answers on stream 1. A failed echo send is a warning
    and does not end the other streams' echo."""
    answers: dict[int, int] = {}  # the client's unidirectional stream -> our answer stream
    next_own = 1  # the next server-initiated bidirectional stream
    while True:
        try:
            data, stream_id, fin = conn.recv()
        except (OSError, TimeoutError) as exc:  # the client closed, or went quiet
            log.debug("echo on %s ended: %s", name, exc)
            return
        target, new = stream_id, False
        if _client_uni(stream_id):
            answer = answers.get(stream_id)
            if answer is None:
                answer = answers[stream_id] = next_own
                next_own += 4
                new = True
            target = answer
            if fin:
                del answers[stream_id]
        try:
            conn.send(data, target, new=new, fin=fin)
        except (OSError, TimeoutError) as exc:
            log.warning("echo to %s: %d bytes from stream %d not sent on stream %d: %s",
                        name, len(data), stream_id, target, exc)


@dataclass
class ClientOptions:
    server: str
    alpn: str
    cafile: str | None = None
    sni: str | None = None
    insecure: bool = False
    session: str | None = None
    early_data: str | None = None
    data: str | None = None
    psk: str | None = None
    backend: str = "auto"


def run_client(opts: ClientOptions, out: TextIO) -> int:
    family, address = parse_address(opts.server)
    session_file = Path(opts.session) if opts.session else None
    session_data = session_file.read_bytes() if session_file and session_file.exists() else None
    with QuicSocket(family, backend=opts.backend) as sock:
        sock.connect(address)
        early = opts.early_data.encode() if opts.early_data and session_data else None
        config = HandshakeConfig(
            alpns=opts.alpn.split(","), hostname=opts.sni or address[0], cafile=opts.cafile,
            verify=not opts.insecure, session_data=session_data, early_data=early is not None,
            psks=read_psk_file(opts.psk) if opts.psk else (), ticket_wait=2.0 if session_file else 0.0,
            early_stream_data=early,
        )
        try:
            result = quic_handshake(sock, config)
        except HandshakeError as exc:
            print(f"handshake failed: {exc.strerror}", file=out, flush=True)
            return 1
        print(f"handshake succeeded ({sock.backend_name} backend): {summary(result)}", file=out, flush=True)
        if session_file is not None and result.session_data:
            session_file.write_bytes(result.session_data)
        sock.settimeout(10)
        if early is not None:
            data, _, _ = sock.recv()
            print(f"echo of 0-RTT data: {data.decode(errors='replace')}", file=out, flush=True)
        if opts.data:
            sock.send(opts.data.encode(), -1, new=True, fin=True)
            received = b""
            fin = False
            while not fin:
                chunk, _, fin = sock.recv()
                received += chunk
            print(f"echo: {received.decode(errors='replace')}", file=out, flush=True)
    return 0
