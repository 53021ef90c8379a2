"""asyncio forms of the handshake calls.

The handshake blocks on recvmsg; here it runs in the loop's default executor so an
event-loop program awaits it without stalling other tasks. Cancelling the await does not
stop the handshake thread: its own timeout (HandshakeConfig.timeout) ends it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from .handshake import (
    HandshakeConfig,
    HandshakeResult,
    quic_client_handshake,
    quic_handshake,
    quic_server_handshake,
)
from .sock import SocketLike, as_backend


async def client_handshake(sock: SocketLike, pkey_file: str | None = None, hostname: str | None = None,
                           alpns: str | Sequence[str] | None = None, **opts: Any) -> HandshakeResult:
    return await asyncio.to_thread(quic_client_handshake, as_backend(sock), pkey_file, hostname, alpns,
                                   **opts)


async def server_handshake(sock: SocketLike, pkey_file: str, cert_file: str | None = None,
                           alpns: str | Sequence[str] | None = None, **opts: Any) -> HandshakeResult:
    return await asyncio.to_thread(quic_server_handshake, as_backend(sock), pkey_file, cert_file, alpns,
                                   **opts)


async def handshake(sock: SocketLike, config: HandshakeConfig) -> HandshakeResult:
    return await asyncio.to_thread(quic_handshake, as_backend(sock), config)
