"""0-RTT stream data beyond the server's remembered credit (issue 13): quic_handshake queues
what the credit takes and says how much (HandshakeResult.early_data_sent, like a short
send's count); the stream stays open without FIN and the caller sends the rest after the
handshake. Run on the simulation here and on a real kernel in the QEMU tier."""
from __future__ import annotations

import pytest

from quichsd import abi, quic_handshake
from quichsd.tls.session import SessionData
from tests.sock.pairs import read_to_fin
from tests.sock.test_handshake import client_config, server_config
from tests.sockets import BACKENDS, client_socket, echo_upper

L = abi.lib
REMEMBERED = 4096  # the first connection's stream credit, which the ticket's session keeps
LATER = 65536  # the credit the server gives the second connection
DATA = bytes(range(256)) * 48  # 12 KiB: three times the remembered credit

def _remembered_stream_credit(session_data: bytes) -> int:
    params = abi.unpack_transport_param(SessionData.decode(session_data).transport_parameters)
    return params["max_stream_data_bidi_remote"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_early_data_beyond_the_remembered_credit(backend, pki, server_factory) -> None:
    """The socket takes the remembered credit's worth before the handshake (the kernel
    queues that much and returns the count, socket.c quic_sendmsg), without FIN; the
    second connection's larger credit lets the rest go after it: the server reads all of
    it to one FIN."""
    srv = server_factory(backend, server_config(pki, early_data=True), after=echo_upper)
    srv.sock.setsockopt(L.QUIC_SOCKOPT_TRANSPORT_PARAM,
                        abi.pack_transport_param(max_stream_data_bidi_remote=REMEMBERED))
    with client_socket(backend, srv.address) as sock:
        first = quic_handshake(sock, client_config(pki, ticket_wait=3))
    assert first.session_data and _remembered_stream_credit(first.session_data) == REMEMBERED
    srv.sock.setsockopt(L.QUIC_SOCKOPT_TRANSPORT_PARAM,
                        abi.pack_transport_param(max_stream_data_bidi_remote=LATER))
    with client_socket(backend, srv.address) as sock:
        second = quic_handshake(sock, client_config(pki, session_data=first.session_data, early_data=True,
                                                    early_stream_data=DATA))
        assert second.resumed and second.early_data_accepted
        assert second.early_data_sent == REMEMBERED
        sock.settimeout(5)
        assert sock.send(DATA[second.early_data_sent:], -1, fin=True) == len(DATA) - REMEMBERED
        assert read_to_fin(sock)[0] == DATA.upper()

@pytest.mark.parametrize("backend", BACKENDS)
def test_early_data_within_the_credit_is_all_sent(backend, pki, server_factory) -> None:
    """Within the credit the count is the whole of it, with FIN: nothing is left to send."""
    srv = server_factory(backend, server_config(pki, early_data=True), after=echo_upper)
    with client_socket(backend, srv.address) as sock:
        first = quic_handshake(sock, client_config(pki, ticket_wait=3))
    with client_socket(backend, srv.address) as sock:
        second = quic_handshake(sock, client_config(pki, session_data=first.session_data, early_data=True,
                                                    early_stream_data=b"early"))
        assert second.early_data_sent == 5
        sock.settimeout(5)
        assert read_to_fin(sock)[0] == b"EARLY"
