"""The daemon serving the QUIC module's own kernel consumer (quic_sample_test.ko) in the six
scenarios of lxin/quic's tests/runtest.sh (tlshd_tests) and 0-RTT both ways, against
libquic's sample and ticket programs; tlshd in the same scenarios as the reference."""
from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.qemu.guest.kernel import (
    MODPROBE,
    Daemon,
    add_user_key,
    quic_tree,
    quichsd_daemon,
    tlshd_daemon,
    upcall,
)
from tests.sockets import free_port

PEER_TIMEOUT = 120


@dataclass
class Keys:
    dir: Path
    psk_test1: int          # key serial of identity "test1" in the "quic" keyring


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    tree = quic_tree()
    d = tmp_path_factory.mktemp("keys")
    shutil.copy(tree / "tests/keys/ca_cert_pkey_psk.sh", d)
    # lxin's script: an openssl CA without extensions, RSA server/client certificates
    # (server.test) and the PSK files.
    subprocess.run(["bash", "ca_cert_pkey_psk.sh"], cwd=d, check=True, capture_output=True, timeout=300)
    # Its PSKs as its "psk-keyring" mode makes them: user keys named by identity in a
    # "quic" keyring linked to the user keyring.
    serials = {}
    for line in (d / "server-psk.txt").read_text().split():
        identity, key = line.split(":")
        serials[identity] = add_user_key(identity, bytes.fromhex(key), keyring="quic")
    serial = serials["test1"]
    return Keys(d, serial)


def daemon_config(keys: Keys) -> str:
    k = keys.dir
    return (
        "[debug]\nloglevel = 7\n\n"
        "[authenticate]\nkeyrings = quic\n\n"
        f"[authenticate.client]\nx509.truststore = {k}/ca-cert.pem\n"
        f"x509.certificate = {k}/client-cert.pem\nx509.private_key = {k}/client-key.pem\n\n"
        f"[authenticate.server]\nx509.truststore = {k}/ca-cert.pem\n"
        f"x509.certificate = {k}/server-cert.pem\nx509.private_key = {k}/server-key.pem\n"
    )


@pytest.fixture(params=["quichsd", "tlshd"])
def daemon(request, tmp_path, keys) -> Daemon:
    start = quichsd_daemon if request.param == "quichsd" else tlshd_daemon
    with start(tmp_path, daemon_config(keys)) as d:
        yield d


@dataclass
class Scenario:
    name: str
    peer: list[str]                 # the libquic program's argv after its path
    module: list[str]               # quic_sample_test parameters
    peer_says: str                  # a line the peer prints when the exchange completed
    zero_rtt: bool = False          # the second connection resumes with early data


SCENARIOS = [
    Scenario("kernel-client-cert", ["sample_test", "server", "0.0.0.0", "{port}", "{k}/server-key.pem",
                                    "{k}/server-cert.pem", "sample"], [], "hello quic server!"),
    Scenario("kernel-server-cert", ["sample_test", "client", "127.0.0.1", "{port}", "none", "none", "sample"],
             ["role=server"], "hello quic client!"),
    Scenario("kernel-client-psk", ["sample_test", "server", "0.0.0.0", "{port}", "{k}/server-psk.txt", "none",
                                   "sample"], ["psk={psk}"], "hello quic server!"),
    Scenario("kernel-server-psk", ["sample_test", "client", "127.0.0.1", "{port}", "{k}/client-psk.txt",
                                   "none", "sample"], ["role=server", "psk=1"], "hello quic client!"),
    # Resumption: the second connection resumes with the first's ticket and sends its
    # first message as early data (0-RTT) before the handshake.
    Scenario("kernel-client-ticket-0rtt", ["ticket_test", "server", "0.0.0.0", "{port}", "{k}/server-key.pem",
                                           "{k}/server-cert.pem", "ticket"], ["alpn=ticket"],
             "hello quic server! I'm back!", zero_rtt=True),
    Scenario("kernel-server-ticket-0rtt", ["ticket_test", "client", "127.0.0.1", "{port}", "ticket"],
             ["role=server", "alpn=ticket"], "hello quic client! welcome back!", zero_rtt=True),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_kernel_consumer_scenario(daemon, keys, scenario) -> None:
    tree = quic_tree()
    port = free_port()
    fill = {"port": port, "k": keys.dir, "psk": keys.psk_test1}
    peer_argv = [str(tree / "tests" / scenario.peer[0]), *(a.format(**fill) for a in scenario.peer[1:])]
    peer = subprocess.Popen(peer_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tree / "tests")
    try:
        if "server" in scenario.peer[1]:
            _wait_udp_bound(port, peer)
        params = ["ip=127.0.0.1", f"port={port}", *(p.format(**fill) for p in scenario.module)]
        insmod = subprocess.run([MODPROBE, "quic_sample_test", *params], capture_output=True, text=True,
                                timeout=PEER_TIMEOUT)
        peer_out = peer.communicate(timeout=PEER_TIMEOUT)[0]
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.communicate()
        subprocess.run([MODPROBE, "-r", "quic_sample_test"], capture_output=True)
    detail = (f"\n--- module: {insmod.returncode} {insmod.stderr}\n--- peer {peer_argv}: {peer.returncode}\n"
              f"{peer_out}\n--- {daemon.name}:\n{daemon.output()[-4000:]}\n--- dmesg:\n{_dmesg_tail()}")
    assert insmod.returncode == 0, "quic_sample_test failed" + detail
    assert peer.returncode == 0, "peer failed" + detail
    assert scenario.peer_says in peer_out or scenario.peer_says in _dmesg_tail(), detail
    if scenario.zero_rtt and daemon.name == "quichsd":
        # Both roles: quichsd's debug line for the resumed connection (tlshd's server refuses
        # the 0-RTT it enables, its client does not log it).
        assert "resumed, 0-RTT accepted" in daemon.output(), detail


def _wait_udp_bound(port: int, peer: subprocess.Popen) -> None:
    """Until the peer's listener holds its UDP port (the kernel module binds a UDP tunnel
    socket), so our client's first Initial does not meet a closed port."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and peer.poll() is None:
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with open(table) as f:
                next(f)
                if any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in f):
                    return
        time.sleep(0.05)


def _dmesg_tail() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout[-2500:]


@pytest.mark.parametrize("mode", ["x509", "psk"])
def test_kernel_client_and_server_through_one_daemon(daemon, keys, mode) -> None:
    """Both ends of a kernel QUIC connection (our consumer module) served by one daemon:
    the client verifies the server as server.test, or both use PSK identity test1."""
    command = {"x509": "quic pair x509 peername=server.test",
               "psk": f"quic pair psk psk={keys.psk_test1}"}[mode]
    report = upcall(f"{command} alpn=sample timeout=30000")
    assert report.cancelled == 0, daemon.output()[-4000:]
    assert report.sides["client"].status == 0, daemon.output()[-4000:]
    assert report.sides["server"].status == 0, daemon.output()[-4000:]
    assert report.ok == 1
