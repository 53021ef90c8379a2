"""The kernel's rules at the socket boundary, as SimConnection reproduces them: errno for
misuse (spec §1.4, §2.3, §2.4), the TRANSPORT_PARAM_EXT blob (§5), TRANSPORT_PARAM
validation, close info (§2.8) and the idle timeout."""
from __future__ import annotations

import errno

import pytest

from quichsd.quic.transport_params import TransportParameters
from quichsd.sock.sim import SimConnection, SimError
from quichsd.sock.sim.state import ConnState
from tests.sim.driver import START, V1, SimServer, Wire, handshake, sim_client

APP, INITIAL, HANDSHAKE, EARLY = 0, 1, 2, 3
AES128 = 51
SECRET = bytes(range(32))


def _errno(fn, *args, **kw) -> int:
    with pytest.raises(SimError) as info:
        fn(*args, **kw)
    assert isinstance(info.value, OSError)
    return info.value.errno


@pytest.fixture
def client() -> SimConnection:
    return SimConnection(is_client=True, now=START, peer_addr=("127.0.0.1", 1))


@pytest.fixture(scope="module")
def established():
    c, s = sim_client(), SimServer()
    wire = handshake(c, s)
    return c, s, wire


# ---- handshake sends (spec §2.3) ------------------------------------------------------------


def test_send_at_a_level_without_key_is_einval(client):
    assert _errno(client.send_crypto, HANDSHAKE, b"x") == errno.EINVAL
    assert _errno(client.send_crypto, APP, b"x") == errno.EINVAL


def test_send_at_early_or_unknown_level_is_einval(client):
    assert _errno(client.send_crypto, EARLY, b"x") == errno.EINVAL
    assert _errno(client.send_crypto, 4, b"x") == errno.EINVAL


def test_empty_send_is_emsgsize(client):
    assert _errno(client.send_crypto, INITIAL, b"") == errno.EMSGSIZE


def test_send_after_close_is_epipe(client):
    client.close(None)
    assert client.state == ConnState.CLOSED
    assert _errno(client.send_crypto, INITIAL, b"x") == errno.EPIPE
    assert _errno(client.stream_send, 0, b"x") == errno.EPIPE


# ---- secrets (spec §1.4 CRYPTO_SECRET, §2.4) ------------------------------------------------


def test_secret_levels_and_types(client):
    assert _errno(client.install_secret, INITIAL, True, AES128, SECRET) == errno.EINVAL
    assert _errno(client.install_secret, 4, True, AES128, SECRET) == errno.EINVAL
    assert _errno(client.install_secret, HANDSHAKE, True, 99, SECRET) == errno.EINVAL
    client.install_secret(HANDSHAKE, True, AES128, SECRET)
    # the first install fixed the level's cipher: a later type is ignored
    client.install_secret(HANDSHAKE, False, 99, SECRET)
    client.send_crypto(HANDSHAKE, b"now allowed")


def test_after_established_secrets_and_blobs_are_einval(established):
    client, server, _ = established
    for conn in (client.conn, server.conn):
        assert conn.state == ConnState.ESTABLISHED
        assert _errno(conn.install_secret, APP, True, AES128, SECRET) == errno.EINVAL
        assert _errno(conn.local_transport_params_blob) == errno.EINVAL
        assert _errno(conn.set_peer_transport_params_blob, b"") == errno.EINVAL
        assert _errno(conn.set_transport_param, {"max_data": 5000}, False) == errno.EINVAL
    # the client may still send its Finished-level data after ESTABLISHED (spec §2.4 step 8)
    # and the server may send at APP level (the NewSessionTicket)
    server.conn.send_crypto(APP, b"\x04\x00\x00\x00")


# ---- TRANSPORT_PARAM_EXT (spec §5) ------------------------------------------------------------


def test_default_client_blob_matches_the_kernel(client):
    cid = client.local_cid
    expected = (b"\x0f\x08" + cid
                + bytes.fromhex("0504800ffff0" "0604800ffff0" "0704800ffff0" "0404801fffe0"
                                "08024064" "09024064"
                                "110c000000016b3343cf00000001"
                                "010480007530" "0e0107"))
    assert client.local_transport_params_blob() == expected


def test_server_blob_echoes_version_information_only_if_the_client_sent_it():
    def server_blob(client_blob: bytes) -> TransportParameters:
        conn = SimConnection(is_client=False, original_dcid=b"O" * 8, peer_cid=b"C" * 8, now=START)
        conn.set_peer_transport_params_blob(client_blob)
        blob = conn.local_transport_params_blob()
        assert blob.startswith(b"\x00\x08" + b"O" * 8)  # odcid first
        return TransportParameters.decode(blob, "server")

    with_vi = SimConnection(is_client=True, local_cid=b"C" * 8, now=START).local_transport_params_blob()
    no_vi = SimConnection(is_client=True, local_cid=b"C" * 8, now=START,
                          local_params={"disable_compatible_version": 1}).local_transport_params_blob()
    assert server_blob(with_vi).version_information is not None
    assert server_blob(no_vi).version_information is None


@pytest.mark.parametrize("mutate,code", [
    (lambda tp: setattr(tp, "initial_source_connection_id", b"X" * 8), 0x08),
    (lambda tp: setattr(tp, "original_destination_connection_id", b"X" * 8), 0x08),
    (lambda tp: setattr(tp, "active_connection_id_limit", 9), 0x08),
    (lambda tp: setattr(tp, "max_idle_timeout", 500), 0x08),
    (lambda tp: setattr(tp, "retry_source_connection_id", b"R" * 8), 0x08),
], ids=["iscid", "odcid", "cid-limit", "idle-timeout", "retry-scid"])
def test_bad_server_blob_closes_the_connection(mutate, code):
    client = SimConnection(is_client=True, peer_cid=b"O" * 8, now=START, peer_addr=("h", 1))
    client.cids.learn_server_scid(b"S" * 8)  # as the server's first packet would
    tp = TransportParameters(original_destination_connection_id=b"O" * 8,
                             initial_source_connection_id=b"S" * 8)
    mutate(tp)
    assert _errno(client.set_peer_transport_params_blob, tp.encode()) == errno.EINVAL
    assert client.state == ConnState.CLOSED
    assert client.close_info[0] == code
    (datagram, _), = client.datagrams_to_send(START)  # the CONNECTION_CLOSE at Initial level
    assert datagram[0] & 0x80 and len(datagram) < 1200


def test_wrong_chosen_version_is_a_version_negotiation_error():
    client = SimConnection(is_client=True, peer_cid=b"O" * 8, now=START)
    client.cids.learn_server_scid(b"S" * 8)
    from quichsd.quic.transport_params import VersionInformation

    tp = TransportParameters(original_destination_connection_id=b"O" * 8,
                             initial_source_connection_id=b"S" * 8,
                             version_information=VersionInformation(0x6B3343CF, (0x6B3343CF, 1)))
    assert _errno(client.set_peer_transport_params_blob, tp.encode()) == errno.EPROTONOSUPPORT
    assert client.close_info[0] == 0x11


def test_blob_over_512_bytes_is_einval(client):
    assert _errno(client.set_peer_transport_params_blob, bytes(513)) == errno.EINVAL
    assert client.state == ConnState.ESTABLISHING


# ---- TRANSPORT_PARAM (spec §1.4) ------------------------------------------------------------


def test_transport_param_validation_and_non_zero_overwrite(client):
    for fields in ({"max_udp_payload_size": 1000}, {"ack_delay_exponent": 21},
                   {"max_ack_delay": 16_384_000}, {"active_connection_id_limit": 9},
                   {"max_idle_timeout": 999_999}, {"max_datagram_frame_size": 1000},
                   {"max_data": 1000}, {"max_data": 1 << 30}, {"max_stream_data_uni": 1 << 29},
                   {"max_streams_bidi": 4097}):
        assert _errno(client.set_transport_param, fields, False) == errno.EINVAL, fields
    client.set_transport_param({"max_data": 5000, "max_streams_uni": 0}, False)
    local = client.get_transport_param(False)
    assert local["max_data"] == 5000 and local["max_streams_uni"] == 100  # zero = unchanged
    # remote: zero until set; over-limit stream counts are clipped, not refused
    assert client.get_transport_param(True)["max_data"] == 0
    client.set_transport_param({"max_streams_bidi": 5000, "max_data": 1 << 40}, True)
    remote = client.get_transport_param(True)
    assert remote["max_streams_bidi"] == 4096 and remote["max_data"] == 1 << 40
    assert client.open_stream(uni=False) == 0  # the restored limits allow a 0-RTT stream


# ---- close and idle (spec §1.1, §2.8) -----------------------------------------------------------


def test_close_while_establishing_sends_application_error():
    client, server = sim_client(), SimServer()
    wire = Wire(client, server)
    client.start(wire.now)
    for data in client.send(wire.now):
        server.recv(data, wire.now)
    server.pump(wire.now)
    assert client.conn.state == ConnState.ESTABLISHING
    client.conn.close(None, b"handshake failed")
    wire.run(lambda: server.conn.state == ConnState.CLOSED)
    assert client.conn.close_info == (0x0C, 0, b"handshake failed")
    assert server.conn.close_info == (0x0C, 0, b"handshake failed")


def test_application_close_after_handshake():
    client, server = sim_client(), SimServer()
    wire = handshake(client, server)
    wire.run(lambda: client.conn.handshake_confirmed)
    server.conn.close(0x1234, b"app says bye")
    wire.run(lambda: client.conn.state == ConnState.CLOSED)
    assert client.conn.close_info == (0x1234, 0, b"app says bye")
    assert client.conn.pending_readable()
    assert client.conn.get_timer() is None


def test_idle_timeout_closes_with_zero_info():
    client, server = sim_client(local_params={"max_idle_timeout": 2_000_000}), SimServer()
    wire = handshake(client, server)
    wire.run(lambda: client.conn.handshake_confirmed)
    # the server goes silent: ack and probe timers come and go (whatever they send is
    # lost), then the idle timer, min(2 s, server's 30 s), closes the connection
    start = wire.now
    for _ in range(100):
        when = client.conn.get_timer()
        if when is None:
            break
        wire.now = max(wire.now, when)  # a timer already due runs now, not in the past
        client.conn.handle_timer(wire.now)
        client.conn.datagrams_to_send(wire.now)
    assert client.conn.state == ConnState.CLOSED
    assert 2.0 <= wire.now - start <= 2.1
    assert client.conn.close_info == (0, 0, b"")


def test_recv_crypto_partial_reads_continue_the_entry():
    client, server = sim_client(), SimServer()
    wire = Wire(client, server)
    client.start(wire.now)
    for data in client.send(wire.now):
        server.recv(data, wire.now)
    conn = server.conn
    level, first, eor = conn.recv_crypto(10)
    assert (level, len(first), eor) == (INITIAL, 10, False)
    level, rest, eor = conn.recv_crypto(1 << 16)
    assert level == INITIAL and eor
    hello = first + rest
    assert hello[0] == 1 and len(hello) == 4 + int.from_bytes(hello[1:4], "big")
    assert conn.recv_crypto(100) is None


def test_version_from_config_and_unknown_version():
    conn = SimConnection(is_client=True, version=0, config={"version": 0x6B3343CF}, now=START)
    assert conn.version == 0x6B3343CF
    assert _errno(SimConnection, is_client=True, version=0x0A0A0A0A, now=START) == errno.EINVAL
    assert SimConnection(is_client=True, now=START).version == V1
