"""Shortcuts of the simulation's hot paths give what the long way gives: a listener's new
connection takes the client's first Initial as the ALPN peek opened it (one decryption),
literal addresses resolve without the resolver, and packet keys stay RFC 9001's."""
from __future__ import annotations

import socket

import pytest

from quichsd.quic import packet_protection as pp
from quichsd.quic.versions import QUIC_V1, QUIC_V2, LongPacketType
from quichsd.sock.sim import SimConnection
from quichsd.sock.sim import frames as fr
from quichsd.sock.sim.listener_peek import client_initial_header, open_client_initial
from quichsd.sock.sim.packets import build_long_packet
from quichsd.sock.sim.simsocket import _numeric_address, _resolve

ODCID, CSCID = b"\x11" * 8, b"\x22" * 8
START = 1000.0
HELLO = b"\x01\x00\x00\x1c" + bytes(range(28))


def _client_initial(version=QUIC_V1) -> bytes:
    key, _ = pp.initial_keys(ODCID, version)
    payload = fr.Crypto(0, HELLO).encode()
    payload += bytes(1160 - len(payload))
    return build_long_packet(key, version, LongPacketType.INITIAL, ODCID, CSCID, b"", 0, None, payload)


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_first_initial_is_decrypted_once(version, monkeypatch):
    datagram = _client_initial(version)
    header = client_initial_header(datagram)
    keys = pp.initial_keys(header.dcid, version)
    opened = open_client_initial(datagram, header, keys[0])
    server = SimConnection(is_client=False, version=version.number, original_dcid=ODCID, peer_cid=CSCID,
                           now=START, initial_keys=keys)
    calls = []
    real = pp.PacketKey.unprotect
    monkeypatch.setattr(pp.PacketKey, "unprotect", lambda self, *a: calls.append(1) or real(self, *a))
    server.receive_datagram(datagram, ("c", 1), START, 0.0, opened)
    assert calls == []
    assert server.recv_crypto(1 << 16) == (1, HELLO, True)
    # A duplicate of that Initial is decrypted (and dropped as a duplicate) as usual.
    server.receive_datagram(datagram, ("c", 1), START)
    assert calls == [1] and server.recv_crypto(1 << 16) is None


def test_opened_initial_of_another_key_is_not_trusted():
    datagram = _client_initial()
    header = client_initial_header(datagram)
    other_keys = pp.initial_keys(b"\x33" * 8, QUIC_V1)
    opened = open_client_initial(datagram, header, pp.initial_keys(ODCID, QUIC_V1)[0])
    server = SimConnection(is_client=False, original_dcid=b"\x33" * 8, peer_cid=CSCID, now=START,
                           initial_keys=other_keys)
    server.receive_datagram(datagram, ("c", 1), START, 0.0, opened)
    assert server.recv_crypto(1 << 16) is None  # its own key does not open it: dropped


@pytest.mark.parametrize("family,host", [
    (socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "10.0.0.255"), (socket.AF_INET6, "::1"),
    (socket.AF_INET6, "2001:DB8:0::1"), (socket.AF_INET6, "::ffff:127.0.0.1"),
])
def test_literal_addresses_resolve_as_getaddrinfo(family, host):
    expected = socket.getaddrinfo(host, 4433, family, socket.SOCK_DGRAM)[0][4]
    assert _numeric_address(family, host, 4433) == expected
    assert _resolve(family, (host, 4433)) == expected


@pytest.mark.parametrize("family,host,port", [
    (socket.AF_INET, "localhost", 4433), (socket.AF_INET, "127.1", 4433),
    (socket.AF_INET, "127.0.0.1", "4433"), (socket.AF_INET6, "fe80::1%lo", 4433),
    (socket.AF_INET, "::1", 4433),
])
def test_other_addresses_go_to_the_resolver(family, host, port):
    assert _numeric_address(family, host, port) is None


def test_initial_keys_match_rfc9001_appendix_a():
    # RFC 9001 §A.1 (DCID 0x8394c8f03e515708)
    client, server = pp.initial_keys(bytes.fromhex("8394c8f03e515708"), QUIC_V1)
    assert client.key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert client.iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert client.hp.hex() == "9f50449e04a0e810283a1e9933adedd2"
    assert server.key.hex() == "cf3a5331653c364c88f0f379b6067e37"
    assert server.iv.hex() == "0ac1493ca1905853b0bba03e"
    assert server.hp.hex() == "c206b8d9b9f0f37644430b490eeaa314"
