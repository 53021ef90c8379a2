"""`quichsd server` and `quichsd client`: handshakes on real sockets, then stream echo."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import abi
from .bounded_pool import BoundedPool
from .handshake import (
    DEFAULT_TIMEOUT,
    HandshakeConfig,
    HandshakeError,
    HandshakeResult,
    load_credentials,
    load_trust,
    quic_handshake,
    read_psk_file,
)
from .sock import QuicSocket
from .tls.constants import CipherSuite, NamedGroup
from .tls.errors import TlsError
from .tls.session import SessionData

log = logging.getLogger(__name__)

DEFAULT_HANDSHAKE_WORKERS = 64
DEFAULT_BACKLOG = 512


class UsageError(ValueError):
    """A bad option value, or a file named on the command line that cannot be used."""


_OUTPUT_LOCK = threading.Lock()


def say(out: TextIO, line: str) -> None:
    """One whole line to `out` in one write, never interleaved with another thread's."""
    with _OUTPUT_LOCK:
        out.write(line + "\n")
        out.flush()


def parse_address(text: str) -> tuple[int, tuple[str, int]]:
    """`host:port` or `[v6]:port` -> (family, (host, port)); UsageError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"expected ADDR:PORT (port 0-65535), got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def _alpn_option(text: str) -> list[str]:
    alpns = [a.strip() for a in text.split(",")]
    if not all(alpns) or any(len(a.encode()) > 255 for a in alpns):
        raise UsageError(f"--alpn: expected a comma-separated list of protocol names, got {text!r}")
    return alpns


def _checked(load: Any, *args: Any) -> Any:
    """A credential file loaded now, before anything listens or connects: a file that
    cannot be used is a UsageError naming it."""
    try:
        return load(*args)
    except HandshakeError as exc:
        raise UsageError(exc.strerror) from None


def summary(result: HandshakeResult) -> str:
    def name(enum: Any, value: int | None) -> str:
        try:
            return enum(value).name if value is not None else "-"
        except ValueError:
            return hex(value or 0)

    if result.peer_certificates:
        peer = _subject(result.peer_certificates[0])
    elif result.psk_identity:
        peer = "psk:" + result.psk_identity.decode(errors="replace")
    else:
        peer = "-"
    return (
        f"alpn={result.alpn} suite={name(CipherSuite, result.cipher_suite)} "
        f"group={name(NamedGroup, result.group)} peer={peer} "
        f"resumed={'yes' if result.resumed else 'no'} 0rtt={'yes' if result.early_data_accepted else 'no'}"
    )


def _subject(cert: Any) -> str:
    """The certificate's subject for a summary line. Names are parsed lazily, and an
    unverified peer's (--insecure) may be malformed: cryptography then raises ValueError or
    TypeError (a BitString attribute under another OID than x500UniqueIdentifier)."""
    try:
        return str(cert.subject.rfc4514_string())
    except (ValueError, TypeError):
        return "<malformed subject>"


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
    # Handshakes at once, each on a pool thread; further connections wait in the backlog.
    handshake_workers: int = DEFAULT_HANDSHAKE_WORKERS
    backlog: int = DEFAULT_BACKLOG


def server_config(opts: ServerOptions) -> HandshakeConfig:
    """The handshake configuration, its files loaded and checked (UsageError) before the
    server listens."""
    if opts.handshake_workers < 1:
        raise UsageError(f"--handshake-workers must be at least 1, got {opts.handshake_workers}")
    if opts.backlog < 1:
        raise UsageError(f"--backlog must be at least 1, got {opts.backlog}")
    credentials = _checked(load_credentials, opts.cert, opts.key) if opts.cert and opts.key else None
    psks = _checked(read_psk_file, opts.psk) if opts.psk else ()
    return HandshakeConfig(server=True, alpns=_alpn_option(opts.alpn), credentials=credentials, psks=psks,
                           early_data=opts.early_data, timeout=10)


def serve(opts: ServerOptions, out: TextIO, ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> int:
    """Accept connections and echo on them until `stop` (or max_connections). Handshakes run
    on a pool of `handshake_workers` threads, and a connection is accepted only when one of
    them is free: the others wait in the listener's backlog, which the transport bounds.
    One connection's trouble, a thread that cannot be started included, ends that
    connection only."""
    family, address = parse_address(opts.listen)
    config = server_config(opts)
    listener = QuicSocket(family, backend=opts.backend)
    try:
        # No ALPN on the listener: with one listener there is nothing to dispatch (spec
        # §2.7), and a ClientHello whose ALPN matches none of ours reaches the handshake,
        # which closes with no_application_protocol (RFC 9001 §8.1) instead of the
        # transport dropping it without a word.
        if opts.retry:  # RFC 9000 §8.1.2, spec kernel-quic-abi §1.4 (CONFIG)
            listener.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(validate_peer_address=1))
        listener.bind(address)
        listener.listen(opts.backlog)
        listener.settimeout(0.2)
    except BaseException:
        listener.close()
        raise
    say(out, f"listening on {opts.listen} ({listener.backend_name} backend)")
    if ready is not None:
        ready.set()
    pool = BoundedPool(opts.handshake_workers, _serve_one, name=f"handshake {opts.listen}")
    served = 0
    try:
        while stop is None or not stop.is_set():
            if not pool.wait_free(0.2):
                continue
            accepted = _accept(listener)
            if accepted is None:
                pool.release()
                continue
            conn, peer = accepted
            served += 1
            if not pool.run(conn, peer, config, out):
                _refuse(conn, peer, "handshake")
            if opts.max_connections and served >= opts.max_connections:
                break
    finally:
        pool.close()
        listener.close()
    return 0


def _accept(listener: QuicSocket) -> tuple[QuicSocket, Any] | None:
    """The next connection, or None after the listener's timeout or a passing failure."""
    try:
        return listener.accept()
    except TimeoutError:
        return None
    except OSError as exc:
        # One connection's trouble (the kernel's ECONNABORTED, a short ENOMEM or
        # EMFILE...) never ends the server; a listener that is gone does.
        if exc.errno in _LISTENER_GONE:
            raise
        log.warning("accept failed, still listening: %s", exc)
        time.sleep(0.05)  # no busy loop on a lasting condition (EMFILE)
        return None


def _refuse(conn: QuicSocket, peer: Any, what: str) -> None:
    """No thread could be started for this connection: close it, say so once, go on."""
    log.warning("connection from %s refused: no thread for its %s (thread limit reached)", _name(peer), what)
    with contextlib.suppress(OSError):
        conn.close()


_LISTENER_GONE = frozenset({errno.EBADF, errno.EINVAL, errno.ENOTSOCK})


def _name(peer: Any) -> str:
    """`host:port` of an accepted peer; "-" when accept() could not tell (QuicSocket.accept)."""
    if not peer:
        return "-"
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _serve_one(conn: QuicSocket, peer: Any, config: HandshakeConfig, out: TextIO) -> None:
    """One connection's handshake, on a pool thread; the echo that follows gets a thread of
    its own. Whatever happens here ends this connection only."""
    name = _name(peer)
    try:
        result = quic_handshake(conn, config)
    except HandshakeError as exc:
        conn.close()
        say(out, f"handshake with {name} failed: {exc.strerror}")
        return
    except Exception as exc:  # a bug, not the peer: say so, but keep serving the others
        conn.close()
        log.error("handshake with %s: unexpected %s: %s", name, type(exc).__name__, exc)
        say(out, f"handshake with {name} failed: {type(exc).__name__}")
        return
    closed = " (the client has closed the connection already)" if result.peer_closed else ""
    say(out, f"handshake with {name} succeeded: {summary(result)}{closed}")
    if result.peer_closed:
        conn.close()
        return
    echo = threading.Thread(target=_echo_one, args=(conn, name), name=f"echo {name}", daemon=True)
    try:
        echo.start()
    except RuntimeError:
        _refuse(conn, peer, "echo")


def _echo_one(conn: QuicSocket, name: str) -> None:
    with conn:
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
    timeout: float = DEFAULT_TIMEOUT


def run_client(opts: ClientOptions, out: TextIO) -> int:
    """One handshake, then the echo asked for. Problems with the options or the files they
    name raise UsageError before anything is sent; a failed handshake or echo raises
    ClientFailed, with the one line to show."""
    family, address = parse_address(opts.server)
    alpns = _alpn_option(opts.alpn)
    session_file = Path(opts.session) if opts.session else None
    session_data = _read_session(session_file) if session_file else None
    psks = _checked(read_psk_file, opts.psk) if opts.psk else ()
    trust = _checked(load_trust, opts.cafile) if opts.cafile else None
    with QuicSocket(family, backend=opts.backend) as sock:
        try:
            sock.connect(address)
        except socket.gaierror as exc:
            raise ClientFailed(f"cannot resolve {address[0]}: {exc.strerror}") from None
        early = opts.early_data.encode() if opts.early_data and session_data else None
        config = HandshakeConfig(
            alpns=alpns, hostname=opts.sni or address[0], trust=trust,
            verify=not opts.insecure, session_data=session_data, early_data=early is not None,
            psks=psks, ticket_wait=2.0 if session_file else 0.0, early_stream_data=early,
            timeout=opts.timeout,
        )
        try:
            result = quic_handshake(sock, config)
        except HandshakeError as exc:
            raise ClientFailed(f"handshake failed: {exc.strerror}") from None
        say(out, f"handshake succeeded ({sock.backend_name} backend): {summary(result)}")
        if session_file is not None and result.session_data:
            write_private(session_file, result.session_data)
        sock.settimeout(10)
        try:
            if early is not None:
                sent = result.early_data_sent  # short beyond the remembered credit: send the rest
                if sent < len(early):
                    sock.send(early[sent:], -1, new=not sent, fin=True)
                data, _, _ = sock.recv()
                say(out, f"echo of 0-RTT data: {data.decode(errors='replace')}")
            if opts.data:
                sock.send(opts.data.encode(), -1, new=True, fin=True)
                received = b""
                fin = False
                while not fin:
                    chunk, _, fin = sock.recv()
                    received += chunk
                say(out, f"echo: {received.decode(errors='replace')}")
        except TimeoutError:
            raise ClientFailed("no echo from the server within 10 s") from None
        except OSError as exc:
            raise ClientFailed(f"echo failed: {exc.strerror or exc}") from None
    return 0


class ClientFailed(Exception):
    """The handshake or the exchange after it failed: the peer's doing, or the network's."""


def _read_session(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None  # the first connection: the ticket is stored there afterwards
    except OSError as exc:
        raise UsageError(f"session file {path}: {exc.strerror}") from None
    if not data:
        return None  # made empty beforehand (to choose its place and owner): nothing to resume
    try:
        SessionData.decode(data)
    except (TlsError, ValueError) as exc:
        raise UsageError(f"session file {path}: not session data of ours ({exc})") from None
    return data


def write_private(path: Path, data: bytes) -> None:
    """`data` in `path`, readable by its owner only from the first byte (mode 0600, a new
    file renamed over the old one, whose wider mode is not kept)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # O_EXCL, mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
