"""Connected socket pairs for socket-tier tests: a client and the server connection it
reached, both after their handshakes, on either backend."""
from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake
from quichsd.sock.base import RecvKind

L = abi.lib


def server_config(pki: Any) -> HandshakeConfig:
    return HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file, key_file=pki.key_file,
                           timeout=5)


def client_config(pki: Any) -> HandshakeConfig:
    return HandshakeConfig(alpns=["h3"], hostname="localhost", cafile=pki.ca_file, timeout=5)


Address = tuple[str, int]


@contextlib.contextmanager
def handshaken_pair(backend: str, server_config: HandshakeConfig, client_config: HandshakeConfig, *,
                    alpn: bytes = b"h3", timeout: float = 5.0,
                    setup: Callable[[QuicSocket], None] | None = None,
                    client_setup: Callable[[QuicSocket], None] | None = None,
                    route: Callable[[Address], Address] | None = None,
                    ) -> Iterator[tuple[QuicSocket, QuicSocket]]:
    """(client, server-side connection) after both handshakes on `backend`: a listener for
    `alpn` on 127.0.0.1 (`setup(listener)` before bind), a client (`client_setup(client)`
    before connect) that connects to the listener's address or to `route(address)` (a
    relay's). `timeout`: the listener's and, after the handshakes, both sockets' timeout,
    and how long the server's handshake may take after the client's."""
    listener = QuicSocket(socket.AF_INET, backend=backend)
    listener.setsockopt(L.QUIC_SOCKOPT_ALPN, alpn)
    if setup is not None:
        setup(listener)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(timeout)
    accepted: list[QuicSocket] = []
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            accepted.append(conn)
            quic_handshake(conn, server_config)
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = QuicSocket(socket.AF_INET, backend=backend)
    if client_setup is not None:
        client_setup(client)
    try:
        address = listener.getsockname()[:2]
        client.connect(route(address) if route else address)
        quic_handshake(client, client_config)
        thread.join(timeout)
        if failures:
            raise failures[0]
        assert accepted and not thread.is_alive(), "the server's handshake did not finish"
        client.settimeout(timeout)
        accepted[0].settimeout(timeout)
        yield client, accepted[0]
    finally:
        client.close()
        for conn in accepted:
            conn.close()
        listener.close()


def connected(backend: str, pki: Any, client_params: dict[str, int] | None = None,
              **server_params: int) -> contextlib.AbstractContextManager[tuple[QuicSocket, QuicSocket]]:
    """(client, server) after both handshakes; `server_params` are the listener's local
    transport parameters (QUIC_SOCKOPT_TRANSPORT_PARAM), which its connections inherit;
    `client_params` the client's, set before connect()."""

    def transport_params(params: dict[str, int] | None) -> Callable[[QuicSocket], None] | None:
        if not params:
            return None
        blob = abi.pack_transport_param(**params)
        return lambda sock: sock.setsockopt(L.QUIC_SOCKOPT_TRANSPORT_PARAM, blob)

    return handshaken_pair(backend, server_config(pki), client_config(pki),
                           setup=transport_params(server_params),
                           client_setup=transport_params(client_params))


def read_streams(sock: QuicSocket, fins: int) -> dict[int, bytes]:
    """Stream data read until `fins` streams have ended."""
    got: dict[int, bytes] = {}
    while fins:
        data, stream_id, fin = sock.recv()
        got[stream_id] = got.get(stream_id, b"") + data
        fins -= fin
    return got


def stream_to_fin(sock: QuicSocket, events: list[bytes],
                  on_data: Callable[[int], None] | None = None, *, want_event: bool = False) -> bytes:
    """One stream's bytes up to its FIN, read a MiB at a time; the events read meanwhile go
    to `events`, and `on_data(bytes so far)` is called after each piece. `want_event`: after
    the FIN, go on reading until `events` holds one too."""
    got, fin = bytearray(), False
    while not fin or (want_event and not events):
        item = sock.recv_item(1 << 20)
        if item.kind is RecvKind.EVENT:
            events.append(item.data)
        elif item.kind is RecvKind.STREAM:
            got += item.data
            if on_data is not None:
                on_data(len(got))
            fin = fin or bool(item.stream_flags & L.MSG_QUIC_STREAM_FIN)
    return bytes(got)


def read_to_fin(sock: QuicSocket) -> tuple[bytes, int]:
    """Data through QuicSocket.recv() up to a FIN, and the stream it came on."""
    data, fin, stream_id = b"", False, -1
    while not fin:
        chunk, stream_id, fin = sock.recv()
        data += chunk
    return data, stream_id
