"""TLS over TCP end to end on the real kernel: our consumer module (kmod/quichsd_upcall.c) asks
for a client and a server handshake on the two ends of one in-kernel loopback TCP connection,
the daemon does both and installs kTLS, and the module then sends data=N bytes each way
through the two sockets and checks they arrive intact (`ulp=tls/tls`: through kTLS).

Every case runs under both daemons: tlshd is the reference, and quichsd's TCP path (issue 12,
quichsd/daemon/tcp_request.py) must give the same results.
"""
from __future__ import annotations

import errno

import pytest

from tests.pki import ca_cert, leaf, test_ca
from tests.qemu.guest.kernel import Daemon, add_psk_key, quichsd_daemon, tlshd_daemon, upcall

DATA = 256 * 1024            # crosses many TLS records (16 KiB each) and TCP windows
KEYRING = "quichsd-ktls"
# The failure cases: tlshd's failing client sends no alert and leaves the connection open,
# so its server fails only when this handshake timeout runs out (also EACCES, GnuTLS's
# timeout), 20 s with tlshd's own default. quichsd's failing client sends its alert, so its
# server fails at once, with the same EACCES.
FAIL_TIMEOUT_MS = 5000
DAEMONS = {"quichsd": quichsd_daemon, "tlshd": tlshd_daemon}


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    d = tmp_path_factory.mktemp("pki")
    cert, key = leaf("p256")
    (d / "ca.pem").write_bytes(test_ca().cert.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (d / "key.pem").chmod(0o600)
    # A CA nobody trusts, for the untrusted-certificate case.
    untrusted = ca_cert("a CA nobody here trusts").cert
    (d / "other-ca.pem").write_bytes(untrusted.public_bytes(serialization.Encoding.PEM))
    return d


def config(d, client_trust: str = "ca.pem") -> str:
    return (f"[authenticate]\nkeyrings = {KEYRING}\n\n"
            f"[authenticate.client]\nx509.truststore = {d}/{client_trust}\n"
            f"x509.certificate = {d}/cert.pem\nx509.private_key = {d}/key.pem\n\n"
            f"[authenticate.server]\nx509.truststore = {d}/ca.pem\n"
            f"x509.certificate = {d}/cert.pem\nx509.private_key = {d}/key.pem\n")


@pytest.fixture(scope="module")
def psk() -> int:
    return add_psk_key("quichsd-ktls-psk", bytes(range(32)), keyring=KEYRING)


@pytest.fixture(params=list(DAEMONS))
def start(request):
    """Starts the daemon under test (quichsd or tlshd) with a configuration."""
    return DAEMONS[request.param]


@pytest.fixture
def daemon(start, tmp_path, pki_dir) -> Daemon:
    with start(tmp_path, config(pki_dir)) as d:
        yield d


# Each case with the REMOTE_AUTH ids (spec §6.4) its ends must report: "key" a key serial
# (the x509 client's server certificate), -1 tlshd 1.4's mutual-auth sentinel 0xFFFFFFFF
# (the x509 server, for the client's certificate), "psk" the PSK's serial, 0 none.
PAIRS = [
    ("tcp pair x509 peername=localhost", ("key", -1)),
    ("tcp pair anon peername=localhost", (0, 0)),
    ("tcp pair psk psk={psk}", ("psk", "psk")),
]
PAIR_IDS = ["x509", "anon", "psk"]


def check_peer_ids(report, expected, psk: int, logs: str) -> None:
    for side, want in zip(("client", "server"), expected, strict=True):
        got = report.sides[side].peerid
        if want == "key":
            assert got > 0, f"{side} peerid {got}\n{logs}"
        else:
            assert got == (psk if want == "psk" else want), f"{side} peerid {got}\n{logs}"


@pytest.mark.parametrize(("command", "peerids"), PAIRS, ids=PAIR_IDS)
def test_pair_carries_data_both_ways_through_ktls(daemon, psk, command, peerids) -> None:
    report = upcall(command.format(psk=psk) + f" timeout=20000 data={DATA}")
    assert report.sides["client"].status == 0, daemon.output()
    assert report.sides["server"].status == 0, daemon.output()
    check_peer_ids(report, peerids, psk, daemon.output())
    assert report.exchange is not None
    assert (report.exchange.client_to_server, report.exchange.server_to_client) == (DATA, DATA)
    assert report.exchange.ulp == "tls/tls"


def test_x509_client_reports_the_server_certificate_key(daemon) -> None:
    report = upcall("tcp pair x509 peername=localhost timeout=20000")
    assert report.sides["client"].status == 0, daemon.output()
    assert report.sides["client"].peerid != 0       # the server's certificate, as a key


def test_untrusted_server_certificate(start, tmp_path, pki_dir) -> None:
    with start(tmp_path, config(pki_dir, client_trust="other-ca.pem")) as d:
        report = upcall(f"tcp pair x509 peername=localhost timeout={FAIL_TIMEOUT_MS}")
        assert report.cancelled == 0, d.output()
        assert report.sides["client"].status == -errno.EACCES, d.output()
        assert report.sides["server"].status == -errno.EACCES, d.output()


def test_wrong_psk(daemon) -> None:
    wrong = add_psk_key("quichsd-ktls-psk", bytes(range(1, 33)), keyring="quichsd-other")
    report = upcall(f"tcp pair psk psk={wrong} timeout={FAIL_TIMEOUT_MS}")
    assert report.cancelled == 0, daemon.output()
    assert report.sides["client"].status == -errno.EACCES, daemon.output()
    assert report.sides["server"].status == -errno.EACCES, daemon.output()


# -- quichsd against tlshd: one daemon per end, in two network namespaces -------------------------
# Both daemons race for ACCEPT in one namespace, so each gets its own: the client end of the
# connection stays in init_net, the module makes the listener (so the server end) in the
# namespace `PEER_NETNS` (netns=<pid of a process there>), reached over a veth pair. The
# kernel keeps handshake requests per namespace: each daemon sees only its end's.

PEER_NETNS = "quichsd-peer"
LOCAL_ADDR, PEER_ADDR = "10.77.0.1", "10.77.0.2"


def _ip(*args: str) -> None:
    import subprocess

    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def peer_netns():
    _ip("netns", "add", PEER_NETNS)
    try:
        _ip("link", "add", "qpeer0", "type", "veth", "peer", "name", "qpeer1")
        _ip("link", "set", "qpeer1", "netns", PEER_NETNS)
        _ip("addr", "add", f"{LOCAL_ADDR}/24", "dev", "qpeer0")
        _ip("link", "set", "qpeer0", "up")
        _ip("-n", PEER_NETNS, "addr", "add", f"{PEER_ADDR}/24", "dev", "qpeer1")
        _ip("-n", PEER_NETNS, "link", "set", "qpeer1", "up")
        _ip("-n", PEER_NETNS, "link", "set", "lo", "up")
        yield PEER_NETNS
    finally:
        _ip("netns", "del", PEER_NETNS)  # takes the veth pair with it


@pytest.fixture(scope="module", params=[("quichsd", "tlshd"), ("tlshd", "quichsd")],
                ids=["quichsd-client-tlshd-server", "tlshd-client-quichsd-server"])
def interop(request, peer_netns, tmp_path_factory, pki_dir):
    """(client end's daemon in init_net, server end's daemon in the peer namespace)."""
    client_name, server_name = request.param
    with DAEMONS[client_name](tmp_path_factory.mktemp(client_name), config(pki_dir)) as client, \
            DAEMONS[server_name](tmp_path_factory.mktemp(server_name), config(pki_dir),
                                 netns=peer_netns) as server:
        yield client, server


@pytest.mark.parametrize(("command", "peerids"), PAIRS, ids=PAIR_IDS)
def test_interop_pair_across_namespaces(interop, psk, command, peerids) -> None:
    client, server = interop
    report = upcall(command.format(psk=psk)
                    + f" netns={server.proc.pid} addr={PEER_ADDR} timeout=20000 data={DATA}")
    logs = f"{client.name} (client end):\n{client.output()}\n{server.name} (server end):\n{server.output()}"
    assert report.sides["client"].status == 0, logs
    assert report.sides["server"].status == 0, logs
    check_peer_ids(report, peerids, psk, logs)
    assert report.exchange is not None
    assert (report.exchange.client_to_server, report.exchange.server_to_client) == (DATA, DATA)
    assert report.exchange.ulp == "tls/tls"


@pytest.fixture(scope="module")
def wrong_psk() -> int:
    """The PSK's identity with another key, in a keyring the daemons do not search."""
    return add_psk_key("quichsd-ktls-psk", bytes(range(1, 33)), keyring="quichsd-other")


@pytest.mark.parametrize("command", [
    "tcp pair x509 peername=wrong.example",   # the client's name check fails
    "tcp pair psk psk={wrong}",               # the server finds the identity, the binder fails
], ids=["wrong-peername", "wrong-psk"])
def test_interop_failures_across_namespaces(interop, wrong_psk, command) -> None:
    client, server = interop
    report = upcall(command.format(wrong=wrong_psk)
                    + f" netns={server.proc.pid} addr={PEER_ADDR} timeout={FAIL_TIMEOUT_MS}")
    logs = f"{client.name} (client end):\n{client.output()}\n{server.name} (server end):\n{server.output()}"
    assert report.cancelled == 0, logs
    assert report.sides["client"].status == -errno.EACCES, logs
    assert report.sides["server"].status == -errno.EACCES, logs
