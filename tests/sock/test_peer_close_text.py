"""The error of a send or recv on a connection the peer closed names the peer's close
(issue 13), on both backends with one formatter (quichsd/quic/close_text.py): the
simulation knows the CONNECTION_CLOSE it received, the kernel backend reads it back with
QUIC_SOCKOPT_CONNECTION_CLOSE (spec §1.4: any state, even CLOSED)."""
from __future__ import annotations

import errno

import pytest

from quichsd import QuicSocket, abi
from quichsd.quic.close_text import describe_peer_close
from tests.sock.pairs import connected
from tests.sockets import BACKENDS

L = abi.lib


def _close_with(peer: QuicSocket, code: int, phrase: bytes) -> None:
    peer.setsockopt(L.QUIC_SOCKOPT_CONNECTION_CLOSE, abi.pack_connection_close(code, phrase))
    peer.close()  # ESTABLISHED: CONNECTION_CLOSE 0x1d with that code and phrase


def _errors_after_the_close(sock: QuicSocket) -> list[OSError]:
    errors = []
    with pytest.raises(OSError) as recv_error:
        sock.recv()  # waits for the peer's CONNECTION_CLOSE
    errors.append(recv_error.value)
    with pytest.raises(OSError) as send_error:
        sock.send(b"after the close", -1, new=True, fin=True)
    errors.append(send_error.value)
    return errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_peer_close_named_in_recv_and_send_errors(backend, pki) -> None:
    with connected(backend, pki) as (client, server):
        _close_with(server, 0x2A, b"bye")
        recv_error, send_error = _errors_after_the_close(client)
    assert recv_error.errno == errno.ENOTCONN, recv_error
    assert send_error.errno == errno.EPIPE, send_error
    for err in (recv_error, send_error):
        assert "peer closed: 0x2a (application error: bye)" in str(err), err


@pytest.mark.parametrize(("backend", "words"), [
    ("sim", "application error: bad_certificate"),
    # The kernel keeps no bit saying the close was an application's: 0x100-0x1ff reads
    # as a TLS alert (RFC 9001 §4.8), the only meaning it has in the transport space.
    pytest.param("kernel", "TLS alert bad_certificate", marks=BACKENDS[1].marks),
], ids=["sim", "kernel"])
def test_application_close_in_the_alert_range(backend, words, pki) -> None:
    with connected(backend, pki) as (client, server):
        _close_with(server, 0x12A, b"bad_certificate")
        recv_error, _ = _errors_after_the_close(client)
    assert f"peer closed: 0x12a ({words})" in str(recv_error), recv_error


@pytest.mark.parametrize("backend", BACKENDS)
def test_our_own_close_is_not_the_peers(backend, pki) -> None:
    """After our shutdown() the close info is ours (the kernel keeps what we set): the
    error stays the bare errno."""
    with connected(backend, pki) as (client, _server):
        client.setsockopt(L.QUIC_SOCKOPT_CONNECTION_CLOSE, abi.pack_connection_close(0x2A, b"ours"))
        client.shutdown()
        with pytest.raises(OSError) as err:
            client.send(b"after our close", -1, new=True, fin=True)
    assert err.value.errno == errno.EPIPE, err.value
    assert "peer closed" not in str(err.value), err.value


@pytest.mark.parametrize(("code", "phrase", "text"), [
    (0x12A, b"bad_certificate", "peer closed: 0x12a (TLS alert bad_certificate)"),
    (0x0A, b"bad frame", "peer closed: 0xa (PROTOCOL_VIOLATION: bad frame)"),
    (0x2A, b"", "peer closed: 0x2a (application error)"),
], ids=["alert", "transport", "outside-the-transport-space"])
def test_close_in_words_when_the_source_cannot_say_whose(code, phrase, text) -> None:
    """app=None (the kernel's case): transport names where the code has one, otherwise
    an application's code."""
    assert describe_peer_close(code, phrase, app=None) == text
