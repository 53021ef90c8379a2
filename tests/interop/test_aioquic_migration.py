"""Passive connection migration against aioquic 1.7.2 (issue 13; RFC 9000 §9.3): a NAT
(tests/sim/relay.py) rebinds the client's source port after the handshake, with or without
the client moving to a new connection ID (§9.5), both ways round: aioquic's client against our
simulation server, our client against aioquic's server. The answer can only come back through
the relay's new upstream socket (the old one is no longer read), so it arriving means the
server validated and moved to the new address."""
from __future__ import annotations

import asyncio
import socket

import pytest

from quichsd import HandshakeConfig, QuicSocket, quic_handshake
from tests.interop.test_aioquic_udp import AioquicServer, Watched, aioquic_server, our_client  # noqa: F401
from tests.sim.relay import ImpairingRelay
from tests.sockets import echo_upper, exchange

aioquic = pytest.importorskip("aioquic", reason="aioquic (the test peer) is not installed")
from aioquic.asyncio import connect  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402

pytestmark = pytest.mark.interop


async def _rebinding_aioquic_client(relay: ImpairingRelay, pki, *, new_cid: bool) -> bytes:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost")
    cfg.load_verify_locations(pki.ca_file)
    async with connect(*relay.address, configuration=cfg, create_protocol=Watched) as client:
        relay.rebind_now()
        if new_cid:
            await client.settle(lambda: client.peer_cids() > 0)
            client.change_connection_id()
        reader, writer = await client.create_stream()
        writer.write(b"moved")
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 5)


@pytest.mark.parametrize("new_cid", [False, True], ids=["same-cid", "new-cid"])
def test_aioquic_client_rebinding_on_our_server(pki, server_factory, new_cid: bool) -> None:
    srv = server_factory("sim", HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file,
                                                key_file=pki.key_file, timeout=5), after=echo_upper)
    with ImpairingRelay(tuple(srv.address[:2])) as relay:
        data = asyncio.run(_rebinding_aioquic_client(relay, pki, new_cid=new_cid))
        assert relay.rebind_after == 0  # the rebinding happened before the stream went out
    assert data == b"MOVED"


def test_our_client_rebinding_against_aioquic_server(pki, aioquic_server) -> None:  # noqa: F811
    srv = aioquic_server()
    with ImpairingRelay(("127.0.0.1", srv.port)) as relay:
        sock = QuicSocket(socket.AF_INET, backend="sim")
        sock.connect(relay.address)
        with sock:
            quic_handshake(sock, our_client(pki))
            relay.rebind_now()
            assert exchange(sock, b"over a new port") == b"OVER A NEW PORT"
            assert relay.rebind_after == 0
        (protocol,) = srv.protocols
        assert protocol._quic._network_paths[0].addr[:2] == relay.upstream_address()  # aioquic moved
