"""Version Negotiation both ways (RFC 9000 §6, §17.2.1; RFC 9368 §2.1, §4) and the
endpoint's refusal of an ALPN no listener takes (RFC 9001 §8.1): packet by packet in
memory, then on loopback UDP between our own client and server."""
from __future__ import annotations

import errno
import select
import socket
import threading

import pytest

from quichsd import HandshakeError, quic_handshake
from quichsd.quic.errors import QuicError, QuicErrorCode
from quichsd.quic.packet_protection import initial_keys
from quichsd.quic.transport_params import TransportParameters, VersionInformation
from quichsd.quic.versions import QUIC_V1, QUIC_V2
from quichsd.sock.sim import frames as fr
from quichsd.sock.sim.levels import INITIAL
from quichsd.sock.sim.listener_peek import client_initial_header, open_client_initial
from quichsd.sock.sim.packets import (
    PacketError,
    build_version_negotiation,
    grease_version,
    parse_header,
    version_negotiation_versions,
)
from quichsd.sock.sim.state import ConnState
from quichsd.sock.sim.version_choice import VersionChoice
from tests.sim import test_retry
from tests.sim.driver import sim_client
from tests.sim.test_retry import client_config, connect

retry_server = test_retry.retry_server  # the fixture: sim listeners on loopback

V1, V2 = QUIC_V1.number, QUIC_V2.number
GREASE = 0x1A2A3A4A
DRAFT29 = 0xFF00001D
ADDR = ("127.0.0.1", 40000)


def _is_grease(version: int) -> bool:
    return version & 0x0F0F0F0F == 0x0A0A0A0A


# ---- the packet ---------------------------------------------------------------------------------


def test_version_negotiation_packet_round_trip() -> None:
    packet = build_version_negotiation(b"clientscid", b"clientdcid", (V1, V2, GREASE), 0x55)
    assert packet[0] == 0x80 | 0x55 and packet[1:5] == bytes(4)
    header = parse_header(packet, 0, 8)
    assert header.is_long and header.version == 0 and header.packet_type is None
    assert (header.dcid, header.scid) == (b"clientscid", b"clientdcid")
    assert version_negotiation_versions(packet, header) == (V1, V2, GREASE)
    for bad in (packet[:-4 * 3], packet[:-1]):  # no versions; not a whole version
        with pytest.raises(PacketError):
            version_negotiation_versions(bad, parse_header(bad, 0, 8))
    assert all(_is_grease(grease_version(r)) for r in (0, 0xFFFFFFFF, 0x12345678))


# ---- the client's side, packet by packet ----------------------------------------------------------


def _client(version: int = V2):
    agent = sim_client(version=version)
    agent.start(0.0)
    (first,) = agent.send(0.0)
    return agent.conn, first


def _vn_for(conn, versions: tuple[int, ...], dcid: bytes | None = None) -> bytes:
    to = conn.local_cid if dcid is None else dcid
    return build_version_negotiation(to, conn.original_dcid, versions, 0)


def test_client_restarts_in_the_common_version_with_a_new_client_hello() -> None:
    conn, _ = _client(V2)
    odcid = conn.original_dcid
    conn.receive_datagram(_vn_for(conn, (V1, GREASE)), ADDR, 0.1)
    assert conn.version == V1 and conn.state is ConnState.ESTABLISHING
    assert conn.datagrams_to_send(0.1) == []  # the v2 ClientHello is not sent again
    assert conn.has_item()
    with pytest.raises(OSError) as err:
        conn.recv_crypto(4096)
    assert err.value.errno == errno.ERESTART and "v1" in str(err.value)
    assert conn.recv_crypto(4096) is None  # said once
    # RFC 9368 §4: the new ClientHello names the version in use, and ours
    tp = TransportParameters.decode(conn.local_transport_params_blob(), "client")
    assert tp.version_information == VersionInformation(V1, (V2, V1))
    conn.send_crypto(INITIAL, b"\x01\x00\x00\x04new!")
    ((datagram, _),) = conn.datagrams_to_send(0.2)
    header = client_initial_header(datagram)
    assert header is not None and header.version == V1 and header.dcid == odcid
    opened = open_client_initial(datagram, header, initial_keys(odcid, QUIC_V1)[0])
    crypto = [f for _, f in fr.parse_frames(opened.payload) if isinstance(f, fr.Crypto)]
    assert [(c.offset, c.data) for c in crypto] == [(0, b"\x01\x00\x00\x04new!")]
    # one Version Negotiation only (RFC 9000 §6.2)
    conn.receive_datagram(_vn_for(conn, (V2,)), ADDR, 0.3)
    assert conn.version == V1 and not conn.has_item()


def test_client_ignores_a_vn_listing_its_version_or_addressed_elsewhere() -> None:
    conn, _ = _client(V2)
    conn.receive_datagram(_vn_for(conn, (V1, V2)), ADDR, 0.1)  # RFC 9000 §6.2
    conn.receive_datagram(_vn_for(conn, (V1,), dcid=b"someone else"), ADDR, 0.1)
    conn.receive_datagram(build_version_negotiation(conn.local_cid, b"not-ours", (V1,), 0), ADDR, 0.1)
    assert conn.version == V2 and conn.state is ConnState.ESTABLISHING and not conn.has_item()
    timer = conn.get_timer()  # the handshake goes on: its Initial is retransmitted
    assert timer is not None
    conn.handle_timer(timer)
    assert conn.datagrams_to_send(timer)


def test_client_without_a_common_version_fails_at_once_naming_both_lists() -> None:
    conn, _ = _client(V2)
    conn.receive_datagram(_vn_for(conn, (DRAFT29, GREASE)), ADDR, 0.1)
    assert conn.state is ConnState.CLOSED and conn.has_item()
    code, _, phrase = conn.close_info
    assert code == QuicErrorCode.VERSION_NEGOTIATION_ERROR
    assert phrase == b"no common QUIC version: server 0xff00001d,0x1a2a3a4a, we v2,v1"
    assert conn.datagrams_to_send(0.1) == []  # the server kept no state: nothing to close


def test_downgrade_check_after_version_negotiation() -> None:
    """RFC 9368 §4: after a restart the server's Available Versions must lead to the
    version the client chose; a list that would have chosen another is a forged VN."""
    choice = VersionChoice(V2, configured=V2, is_client=True)
    choice.restart(V1, (V1, GREASE))
    assert choice.negotiate(VersionInformation(V1, (V1,)), is_client=True) is None
    for forged in ((V2, V1), ()):
        with pytest.raises(QuicError) as err:
            choice.negotiate(VersionInformation(V1, forged), is_client=True)
        assert err.value.error_code == QuicErrorCode.VERSION_NEGOTIATION_ERROR


# ---- on the wire -----------------------------------------------------------------------------------


def _initial_of_version(version: int, size: int, scid: bytes = b"rawscid1") -> bytes:
    """A long header datagram of `version`, `size` bytes: what a client of a version we do
    not speak sends first (its body is opaque to us)."""
    head = bytes((0xC0,)) + version.to_bytes(4, "big") + b"\x08rawdcid1" + bytes((len(scid),)) + scid
    return head + bytes(size - len(head))


def _receive(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    return sock.recv(65536)


def test_server_answers_an_unknown_version_with_version_negotiation(retry_server) -> None:
    srv = retry_server(validate=False)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with raw:
        # Not answered: a datagram under 1200 bytes, a Version Negotiation (RFC 9000 §6.1).
        raw.sendto(_initial_of_version(DRAFT29, 1199, b"short"), srv.address)
        raw.sendto(build_version_negotiation(b"x" * 8, b"y" * 8, (V1,), 0) + bytes(1200), srv.address)
        trigger = _initial_of_version(DRAFT29, 1200)
        raw.sendto(trigger, srv.address)
        answer = _receive(raw)  # the first answer is the third datagram's
    header = parse_header(answer, 0, 8)
    assert header.version == 0 and answer[0] & 0x80
    assert (header.dcid, header.scid) == (b"rawscid1", b"rawdcid1")
    versions = version_negotiation_versions(answer, header)
    assert versions[:2] == (V1, V2) and len(versions) == 3 and _is_grease(versions[2])
    assert len(answer) < len(trigger)
    assert srv.stats.version_negotiations == 1 and not srv.results


class VersionNegotiator:
    """A UDP hop in front of a server: the client's first datagram is answered with a
    Version Negotiation listing `versions`, everything after is relayed both ways."""

    def __init__(self, server: tuple, versions: tuple[int, ...]) -> None:
        self.server = server
        self.versions = versions
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.address = self.front.getsockname()
        self.negotiated = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = None
        while not self._stop:
            readable, _, _ = select.select([self.front, self.back], [], [], 0.05)
            for sock in readable:
                data, addr = sock.recvfrom(65536)
                if sock is self.back:
                    self.front.sendto(data, client)
                    continue
                client = addr
                if not self.negotiated:
                    header = parse_header(data, 0, 8)
                    self.negotiated += 1
                    self.front.sendto(build_version_negotiation(header.scid, header.dcid, self.versions, 0),
                                      addr)
                    continue
                self.back.sendto(data, self.server)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.front.close()
        self.back.close()


@pytest.fixture
def negotiator():
    made: list[VersionNegotiator] = []

    def make(server: tuple, versions: tuple[int, ...]) -> VersionNegotiator:
        hop = VersionNegotiator(server, versions)
        made.append(hop)
        return hop

    yield make
    for hop in made:
        hop.close()


def test_a_forged_version_negotiation_is_caught_by_the_downgrade_check(pki, retry_server, negotiator) -> None:
    """The hop claims the server speaks only v1; our server speaks v2 and v1 and says so
    in its version_information, which would have made the client choose v2 (RFC 9368 §4).
    (Our own client and server share both versions, so a genuine fallback between them
    cannot happen: the aioquic interop tests show one, tests/interop.)"""
    srv = retry_server(validate=False)
    hop = negotiator(srv.address, (V1, GREASE))
    with connect(hop.address, version=V2) as sock, pytest.raises(HandshakeError) as err:
        quic_handshake(sock, client_config(pki))
    assert hop.negotiated == 1 and sock.backend.conn.version == V1  # it did restart in v1
    assert err.value.errno == errno.EPROTONOSUPPORT and "contradict its Version Negotiation" in str(err.value)
    (served,) = srv.wait(1)
    assert isinstance(served, Exception)  # the server got our CONNECTION_CLOSE 0x11


def test_our_client_fails_at_once_without_a_common_version(pki, retry_server, negotiator) -> None:
    srv = retry_server(validate=False)
    hop = negotiator(srv.address, (DRAFT29, GREASE))
    with connect(hop.address, version=V2) as sock, pytest.raises(HandshakeError) as err:
        quic_handshake(sock, client_config(pki, timeout=2))  # a timeout would be ETIMEDOUT
    assert err.value.errno == errno.EPROTONOSUPPORT
    assert "0xff00001d,0x1a2a3a4a" in str(err.value) and "v2,v1" in str(err.value)


def test_our_client_gets_no_application_protocol_from_the_endpoint(pki, retry_server) -> None:
    """No listener takes smb: the endpoint closes with 0x178 (the kernel stays silent, see
    README); the client's 1 s handshake timeout would otherwise give ETIMEDOUT."""
    srv = retry_server(validate=False)
    with connect(srv.address) as sock, pytest.raises(HandshakeError) as err:
        quic_handshake(sock, client_config(pki, alpns=["smb"], timeout=1))
    assert err.value.errno == errno.EACCES and err.value.alert.name == "no_application_protocol"
    assert "0x178" in str(err.value)
    assert srv.stats.no_listener == 1 and not srv.results  # no connection was made


def test_alpn_refusal_is_one_small_initial_close(retry_server) -> None:
    srv = retry_server(validate=False)
    agent = sim_client()  # offers quichsd-sim, which the listener (h3) does not take
    agent.start(0.0)
    (hello,) = agent.send(0.0)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with raw:
        raw.sendto(hello, srv.address)
        answer = _receive(raw)
    header = parse_header(answer, 0, 8)
    assert header.version == V1 and header.dcid == agent.conn.local_cid and len(answer) < len(hello)
    opened = open_client_initial(answer, header, initial_keys(agent.conn.original_dcid, QUIC_V1)[1])
    frames = [f for _, f in fr.parse_frames(opened.payload)]
    assert frames == [fr.ConnectionClose(0x178, 0x06, b"no application protocol")]
