"""The anti-amplification limit counted on the wire (RFC 9000 §8.1): a server sends at most
three times what it received from an unvalidated address, its CONNECTION_CLOSE included
(§10.2.3). A raw UDP socket plays a client whose source address is forged: it sends valid
Initials (a ClientHello from our TLS engine) and never answers."""
from __future__ import annotations

import socket
import threading

import pytest

from quichsd import HandshakeConfig, HandshakeError, QuicSocket, abi, quic_handshake
from quichsd.quic.packet_protection import UnprotectError, initial_keys
from quichsd.quic.versions import SUPPORTED_VERSIONS, LongPacketType
from quichsd.sock.sim import frames as fr
from quichsd.sock.sim.packets import PacketError, parse_header, unprotect_packet
from tests.sim.driver import ALPN, sim_client

L = abi.lib
V1, V2 = 0x00000001, 0x6B3343CF
HANDSHAKE_TIMEOUT = 1.8  # the server gives up (and closes) after this; its first PTO (~1 s) fires before


class SilentClientServer:
    """A sim listener whose accepted connections run the server handshake, which times
    out (nobody answers), then close: the close path under the amplification limit."""

    def __init__(self, pki, version: int) -> None:
        self.sock = QuicSocket(socket.AF_INET, backend="sim")
        self.sock.setsockopt(L.QUIC_SOCKOPT_ALPN, ALPN)
        self.sock.setsockopt(L.QUIC_SOCKOPT_CONFIG, abi.pack_config(version=version))
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.address = self.sock.getsockname()[:2]
        self.config = HandshakeConfig(server=True, alpns=[ALPN], cert_file=pki.cert_file,
                                      key_file=pki.key_file, timeout=HANDSHAKE_TIMEOUT)
        self.outcome: list = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(5)
        conn, _ = self.sock.accept()
        try:
            quic_handshake(conn, self.config)
        except HandshakeError as exc:
            self.outcome.append(exc)
        finally:
            conn.close()  # a CONNECTION_CLOSE, if the budget has room for one

    def finish(self) -> None:
        self.thread.join(HANDSHAKE_TIMEOUT + 5)
        self.sock.close()


def drain(raw: socket.socket) -> list[bytes]:
    """Everything queued on the raw socket (loopback delivers as it sends)."""
    raw.setblocking(False)
    out = []
    while True:
        try:
            out.append(raw.recv(65536))
        except BlockingIOError:
            return out


def initial_close(datagram: bytes, odcid: bytes, version: int) -> fr.ConnectionClose | None:
    """The CONNECTION_CLOSE in the datagram's Initial packet, if any (server Initial key
    of the client's first DCID, RFC 9001 §5.2)."""
    try:
        header = parse_header(datagram, 0, 8)
    except PacketError:
        return None
    if header.packet_type is not LongPacketType.INITIAL:
        return None
    try:
        server_key = initial_keys(odcid, SUPPORTED_VERSIONS[version])[1]
        _, _, payload = unprotect_packet(server_key, datagram, header, -1)
    except UnprotectError:
        return None
    return next((f for _, f in fr.parse_frames(payload) if isinstance(f, fr.ConnectionClose)), None)


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("initials", [1, 2])
def test_unvalidated_server_sends_at_most_three_times_what_it_received(pki, version: int,
                                                                      initials: int) -> None:
    srv = SilentClientServer(pki, version)
    agent = sim_client(version=version)
    agent.start(0.0)
    (first,) = agent.send(0.0)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.settimeout(5)
    sent = [first]
    raw.sendto(first, srv.address)
    received = [raw.recv(65536)]  # the server's first flight has begun
    if initials == 2:
        # the client's probe: its Initial again in a new packet (a PTO retransmission)
        agent.conn.handle_timer(10.0)
        probe = agent.send(10.0)[0]
        assert len(probe) >= 1200
        sent.append(probe)
        raw.sendto(probe, srv.address)
    srv.finish()
    assert srv.outcome and isinstance(srv.outcome[0], HandshakeError)
    received += drain(raw)
    raw.close()
    total_in, total_out = sum(map(len, sent)), sum(map(len, received))
    assert total_in == 1200 * initials
    assert total_out <= 3 * total_in, f"{total_out} bytes for {total_in}: {total_out / total_in:.3f}x"
    print(f"amplification: {total_out} bytes for {total_in}: {total_out / total_in:.3f}x")
    # the budget was used, not avoided: with one Initial, the flight's two full datagrams
    # at least; with two, more than one Initial's budget allowed (the second raised it)
    assert total_out > 3 * 1200 if initials == 2 else total_out >= 2 * 1200
    # the close still goes out when the budget has room for it (with one Initial it had
    # none left: 3,598 bytes sent before it; the total above held it back)
    closes = [c for c in (initial_close(d, agent.conn.original_dcid, version) for d in received) if c]
    if initials == 2:
        assert len(closes) == 1


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_padding_never_exceeds_the_budget(version: int) -> None:
    """In memory, on a simulated clock: the server's ACK leaves on its own before its
    handshake agent answers (the hold ends first), so what is left of the budget after
    its flight is not a multiple of 1200; a probe must not be padded past it (RFC 9000
    §14.1 padding vs §8.1): an Initial may then carry an ACK only. Then the close."""
    from tests.sim.driver import START, SimServer

    client, server = sim_client(version=version), SimServer()
    client.start(START)
    (first,) = client.send(START)
    server.recv(first, START)
    now = server.timer()  # the ACK's hold runs out before the agent reads the hello
    server.on_timer(now)
    sent = server.send(now)
    assert len(sent) == 1 and len(sent[0]) < 100  # the ACK alone
    server.pump(now)
    sent += server.send(now)
    for _ in range(6):  # PTOs while the client stays silent
        now = server.timer()
        server.on_timer(now)
        sent += server.send(now)
    server.conn.close(0x0C)
    sent += server.send(now)
    total = sum(map(len, sent))
    assert 2 * 1200 < total <= 3 * len(first), [len(d) for d in sent]
