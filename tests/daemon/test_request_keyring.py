"""The per-request keyring (ACCEPT's KEYRING, spec tlshd-behaviour §5) on this machine's
kernel keyrings: linked into the session keyring while its request runs, and unlinked
after, from there and from the process keyring the kernel links it into at ACCEPT."""
from __future__ import annotations

import socket

from quichsd.daemon import keyring as kr
from quichsd.daemon.keyring import AuthMode, RequestKeyrings
from quichsd.daemon.request import HandshakeRequest, MessageType, handle
from quichsd.tls.server import ServerEngine
from tests.daemon.conftest import needs_keyctl
from tests.daemon.test_tcp_request import TIMEOUT_MS, PeerEnd, daemon_config
from tests.tcp.tlstcp import server_config

pytestmark = needs_keyctl


def _members(ring: int) -> list[int]:
    try:
        return kr.keyring_members(ring)
    except kr.KeyringError:  # no process keyring (yet): nothing is linked in it
        return []


def _request_keyring(session: int) -> int:
    """A keyring reachable only through our process keyring, as the kernel leaves one."""
    ring = kr.add_key("keyring", "quichsd request keyring", None, session)
    kr.link(ring, kr.KEY_SPEC_PROCESS_KEYRING)
    kr.unlink(ring, session)
    return ring


def test_linked_while_the_request_runs_and_unlinked_after(session: int) -> None:
    ring = _request_keyring(session)
    keyrings = RequestKeyrings()
    with keyrings.linked(ring):
        assert ring in kr.keyring_members(session)
        with keyrings.linked(ring):  # a second request with the same keyring
            pass
        assert ring in kr.keyring_members(session)  # the first still runs
    assert ring not in kr.keyring_members(session)
    assert ring not in _members(kr.KEY_SPEC_PROCESS_KEYRING)


def test_a_keyring_linked_before_stays(session: int) -> None:
    ring = kr.add_key("keyring", "configured keyring", None, session)
    with RequestKeyrings().linked(ring):
        pass
    assert ring in kr.keyring_members(session)


def test_handle_unlinks_the_request_keyring(session: int, pki) -> None:
    """Through handle(): the client's certificate and key are read by serial from the
    request keyring (possessed through the session link), the peer finishes its handshake,
    and afterwards the keyring is linked nowhere of ours."""
    from cryptography.hazmat.primitives import serialization

    from quichsd.tls.config import Credentials

    ring = kr.add_key("keyring", "quichsd request keyring", None, session)
    creds = Credentials.from_files(pki.cert_file, pki.key_file)
    cert = kr.add_key("user", "cert", creds.chain[0].public_bytes(serialization.Encoding.DER), ring)
    key = kr.add_key("user", "key", creds.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), ring)
    kr.link(ring, kr.KEY_SPEC_PROCESS_KEYRING)
    kr.unlink(ring, session)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        mine = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    with mine:
        peer = PeerEnd(theirs, ServerEngine(server_config()))
        done = handle(HandshakeRequest(mine, MessageType.CLIENTHELLO, AuthMode.X509, certificate=cert,
                                       private_key=key, peername="localhost", keyring=ring,
                                       timeout_ms=TIMEOUT_MS), daemon_config(pki))
        mine.shutdown(socket.SHUT_RDWR)
        peer.join()
    # The handshake completed with the certificate read from the keyring (then kTLS, or EIO
    # on a host without it).
    assert done.role == "client" and len(peer.peer_certificates) == 1
    assert peer.peer_certificates[0] == creds.chain[0]
    assert ring not in kr.keyring_members(session)
    assert ring not in _members(kr.KEY_SPEC_PROCESS_KEYRING)
