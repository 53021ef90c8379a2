"""Over loopback UDP against picoquic (through aiopquic, in its own Python >= 3.12 venv,
.venv-peer, as a subprocess running tests/interop/picoquic_peer.py): our handshake on the
simulation backend, both directions."""
from __future__ import annotations

import errno
import json
import socket
import subprocess
import threading
from functools import cache
from pathlib import Path

import pytest

from quichsd import HandshakeConfig, HandshakeError, QuicSocket, abi, quic_handshake
from quichsd.tls.config import ClientAuth
from quichsd.tls.constants import NamedGroup
from tests.sockets import client_socket, echo_upper, exchange, started_peers

pytestmark = pytest.mark.interop
ROOT = Path(__file__).resolve().parents[2]
PEER_PY = ROOT / ".venv-peer" / "bin" / "python"
PEER_SCRIPT = Path(__file__).with_name("picoquic_peer.py")
V1, V2 = 0x00000001, 0x6B3343CF
NO_PEER = ".venv-peer with Python >= 3.12 and aiopquic: run `make peer-venv`"


@cache
def _peer_missing() -> str | None:
    if not PEER_PY.exists():
        return f"no {PEER_PY.relative_to(ROOT)}; needs {NO_PEER}"
    try:
        subprocess.run([str(PEER_PY), "-c", "import aiopquic"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"aiopquic does not import in {PEER_PY}: {exc}; needs {NO_PEER}"
    return None


@pytest.fixture(autouse=True)
def _need_peer() -> None:
    if reason := _peer_missing():
        pytest.skip(reason)


class PicoquicServer:
    """picoquic_peer.py server: its port, and the JSON events it reports per connection."""

    def __init__(self, pki, *, alpn: str = "h3,smb", groups: list[int] | None = None) -> None:
        cmd = [str(PEER_PY), str(PEER_SCRIPT), "server", "--cert", pki.cert_file, "--key", pki.key_file,
               "--alpn", alpn]
        if groups:
            cmd += ["--groups", ",".join(map(str, groups))]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        with self._changed:
            self._changed.wait_for(lambda: self.events or self.proc.poll() is not None, 20)
        if not self.events or "port" not in self.events[0]:
            self.stop()
            raise RuntimeError(f"picoquic server did not start: {self.proc.stderr.read()[-2000:]}")
        self.port = self.events.pop(0)["port"]

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()

    def wait_events(self, kind: str, n: int = 1, timeout: float = 5) -> list[dict]:
        def matching() -> list[dict]:
            return [e for e in self.events if e.get("event") == kind]

        with self._changed:
            self._changed.wait_for(lambda: len(matching()) >= n, timeout)
            return matching()

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(2)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def picoquic_server(pki):
    yield from started_peers(PicoquicServer, pki)


def picoquic_client(pki, port: int, *args: str) -> dict:
    """One picoquic_peer.py client run: its JSON report."""
    cmd = [str(PEER_PY), str(PEER_SCRIPT), "client", "--port", str(port), "--cafile", pki.ca_file, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def our_client(pki, **kw) -> HandshakeConfig:
    base = dict(alpns=["smb", "h3"], hostname="localhost", cafile=pki.ca_file, timeout=5)
    return HandshakeConfig(**{**base, **kw})


def our_server(pki, **kw) -> HandshakeConfig:
    base = dict(server=True, alpns=["h3"], cert_file=pki.cert_file, key_file=pki.key_file, timeout=5)
    return HandshakeConfig(**{**base, **kw})


def quic_version(sock: QuicSocket) -> int:
    """The QUIC version the sim connection ended up in (after any compatible negotiation)."""
    return sock.backend.conn.version


def _echo(conn: QuicSocket, result) -> None:
    result.quic_version = quic_version(conn)
    echo_upper(conn, result)


# --- our client, picoquic server -------------------------------------------------------------

@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_our_client_against_picoquic_server(pki, picoquic_server, version) -> None:
    """Started in v1, our client lists v2 in its version_information and picoquic's server
    moves the connection there (RFC 9368 compatible negotiation); started in v2 it stays."""
    srv = picoquic_server(alpn="h3")
    sock = QuicSocket(socket.AF_INET, backend="sim")
    sock.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(version=version))
    sock.connect(("127.0.0.1", srv.port))
    with sock:
        result = quic_handshake(sock, our_client(pki))
        assert result.alpn == "h3" and quic_version(sock) == V2
        assert result.group == NamedGroup.X25519 and not result.resumed
        assert exchange(sock, b"over the wire") == b"OVER THE WIRE"
    (hs,) = srv.wait_events("handshake")
    assert hs == {"event": "handshake", "alpn": "h3", "resumed": False}
    assert srv.wait_events("data")[0]["data"] == "over the wire"


@pytest.mark.parametrize("server_alpns, expected", [("h3,smb", "h3"), ("smb,h3", "smb")])
def test_alpn_choice_of_picoquic_server(pki, picoquic_server, server_alpns, expected) -> None:
    """We offer smb then h3; picoquic's selector picks by its own list's order."""
    srv = picoquic_server(alpn=server_alpns)
    with client_socket("sim", ("127.0.0.1", srv.port)) as sock:
        result = quic_handshake(sock, our_client(pki))
        assert result.alpn == expected
        assert exchange(sock, b"x") == b"X"
    assert srv.wait_events("handshake")[0]["alpn"] == expected


def test_our_client_with_unknown_alpn_is_refused_by_picoquic(pki, picoquic_server) -> None:
    srv = picoquic_server(alpn="h3,smb")
    with client_socket("sim", ("127.0.0.1", srv.port)) as sock, pytest.raises(HandshakeError) as info:
        quic_handshake(sock, our_client(pki, alpns=["other"], timeout=3))
    # picoquic answers with CONNECTION_CLOSE 0x178 at once: a TLS failure on our side.
    assert info.value.errno == errno.EACCES, info.value
    assert info.value.alert.name == "no_application_protocol"
    assert srv.wait_events("handshake", timeout=0.5) == []


def test_our_client_resumes_with_0rtt_against_picoquic(pki, picoquic_server) -> None:
    srv = picoquic_server(alpn="h3")
    with client_socket("sim", ("127.0.0.1", srv.port)) as sock:
        first = quic_handshake(sock, our_client(pki, ticket_wait=3))
    assert first.session_data, "picoquic sent no NewSessionTicket"
    with client_socket("sim", ("127.0.0.1", srv.port)) as sock:
        second = quic_handshake(sock, our_client(pki, session_data=first.session_data, early_data=True,
                                                 early_stream_data=b"zero rtt"))
        assert second.resumed and second.early_data_accepted and second.alpn == "h3"
        sock.settimeout(5)
        received, fin = b"", False
        while not fin:
            chunk, _, fin = sock.recv()
            received += chunk
        assert received == b"ZERO RTT"
    hs = srv.wait_events("handshake", 2)
    assert [e["resumed"] for e in hs] == [False, True]


def test_picoquic_server_ignores_group_order_for_our_x25519_share(pki, picoquic_server) -> None:
    """aiopquic's key_exchange_groups only orders picoquic's groups; its server still takes
    our X25519 share, so a server "limited" to p256 gives no HelloRetryRequest."""
    srv = picoquic_server(alpn="h3", groups=[int(NamedGroup.SECP256R1)])
    with client_socket("sim", ("127.0.0.1", srv.port)) as sock:
        result = quic_handshake(sock, our_client(pki))
        assert result.group == NamedGroup.X25519
        assert exchange(sock, b"x") == b"X"


@pytest.mark.parametrize("group", [NamedGroup.X25519, NamedGroup.SECP256R1], ids=["x25519", "p256"])
def test_picoquic_server_sends_hello_retry_request_to_our_client(pki, picoquic_server, group) -> None:
    """Our client shares secp384r1 first, which picoquic lacks: picoquic retries with a
    HelloRetryRequest and the handshake ends on `group`."""
    srv = picoquic_server(alpn="h3")
    with client_socket("sim", ("127.0.0.1", srv.port)) as sock:
        result = quic_handshake(sock, our_client(pki, groups=[NamedGroup.SECP384R1, group], timeout=2))
        assert result.group == group
        assert exchange(sock, b"after retry") == b"AFTER RETRY"


# --- picoquic client, our server -------------------------------------------------------------

@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_picoquic_client_against_our_server(pki, server_factory, version) -> None:
    """picoquic starts in v1 and, asked for v2, offers it by compatible version negotiation
    (RFC 9368); our server, configured for v2, moves the connection there."""
    srv = server_factory("sim", our_server(pki), after=_echo)
    srv.sock.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(version=version))
    version_name = "v1" if version == V1 else "v2"
    report = picoquic_client(pki, srv.address[1], "--alpn", "h3", "--version", version_name)
    assert report["error"] is None, report
    assert report["echo"] == "FROM PICOQUIC" and report["alpn"] == "h3" and report["resumed"] is False
    (result,) = srv.wait()
    assert result.alpn == "h3" and not result.resumed
    assert result.quic_version == version
    assert not srv.errors


@pytest.mark.parametrize("client_alpns, expected",
                         [("h3,smb", "h3"), ("smb,h3", "smb"), ("other,smb", "smb")])
def test_our_server_alpn_choice_for_picoquic_client(pki, server_factory, client_alpns, expected) -> None:
    """Our server (smb, h3) picks in the client's preference order, as GnuTLS does."""
    srv = server_factory("sim", our_server(pki, alpns=["smb", "h3"]), alpn=b"smb,h3", after=_echo)
    report = picoquic_client(pki, srv.address[1], "--alpn", client_alpns)
    assert report["alpn"] == expected and report["echo"] == "FROM PICOQUIC", report
    assert srv.wait()[0].alpn == expected


def test_picoquic_client_resumes_with_0rtt_on_our_server(pki, server_factory, tmp_path) -> None:
    srv = server_factory("sim", our_server(pki, early_data=True), after=_echo)
    tickets = str(tmp_path / "tickets.bin")
    first = picoquic_client(pki, srv.address[1], "--ticket-file", tickets)
    assert first["echo"] == "FROM PICOQUIC" and first["resumed"] is False, first
    assert Path(tickets).stat().st_size > 0, "picoquic stored no ticket from our server"
    second = picoquic_client(pki, srv.address[1], "--ticket-file", tickets, "--early", "--data", "early bird")
    assert second["echo"] == "EARLY BIRD" and second["resumed"] is True, second
    results = srv.wait(2)
    assert results[1].resumed and results[1].early_data_accepted, results[1]
    # aiopquic's HandshakeCompleted always says early_data_accepted=False (picoquic's 0-RTT
    # status is not surfaced), so only our side can tell the data went as 0-RTT.


@pytest.mark.parametrize("group", [NamedGroup.SECP256R1, NamedGroup.X25519MLKEM768],
                         ids=["p256", "x25519mlkem768"])
def test_our_server_sends_hello_retry_request_to_picoquic(pki, server_factory, group) -> None:
    """picoquic shares X25519 first; our server takes only `group`, which picoquic also
    supports, so it retries with a HelloRetryRequest."""
    srv = server_factory("sim", our_server(pki, groups=[group]), after=_echo)
    report = picoquic_client(pki, srv.address[1], "--data", "retry me")
    assert report["error"] is None and report["echo"] == "RETRY ME", report
    (result,) = srv.wait()
    assert result.group == group


def test_our_secp384r1_only_server_and_picoquic_share_no_group(pki, server_factory) -> None:
    """picoquic (aiopquic 0.6.1's KEX_* list) has no secp384r1: nothing to retry with, so our
    server fails the handshake and picoquic reports a close."""
    srv = server_factory("sim", our_server(pki, groups=[NamedGroup.SECP384R1]), after=_echo)
    report = picoquic_client(pki, srv.address[1], "--timeout", "3")
    assert report["echo"] in (None, ""), report
    (failure,) = srv.wait()
    assert isinstance(failure, HandshakeError) and failure.alert.name == "handshake_failure", failure


def test_picoquic_client_certificate_on_our_server(pki, server_factory) -> None:
    """aiopquic has no client-certificate knob of its own, but a client's certificate_file /
    private_key_file reach picoquic, which presents them when our server asks."""
    config = our_server(pki, client_auth=ClientAuth.REQUIRED, cafile=pki.ca_file)
    srv = server_factory("sim", config, after=_echo)
    report = picoquic_client(pki, srv.address[1], "--cert", pki.cert_file, "--key", pki.key_file)
    assert report["error"] is None and report["echo"] == "FROM PICOQUIC", report
    (result,) = srv.wait()
    assert [c.subject.rfc4514_string() for c in result.peer_certificates] == ["CN=localhost"]


def test_picoquic_client_without_certificate_is_refused_by_our_server(pki, server_factory) -> None:
    config = our_server(pki, client_auth=ClientAuth.REQUIRED, cafile=pki.ca_file)
    srv = server_factory("sim", config, after=_echo)
    report = picoquic_client(pki, srv.address[1], "--timeout", "3")
    assert report["echo"] in (None, ""), report
    (failure,) = srv.wait()
    assert isinstance(failure, HandshakeError) and failure.alert.name == "certificate_required", failure
