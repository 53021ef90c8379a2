"""quichsd against lxin/quic's libquic test programs, on the real kernel module.

Our client and server (the quic_client_handshake/quic_server_handshake API on
QuicSocket(backend="kernel"), and the `quichsd client`/`quichsd server` CLI) face the
built sample_test, ticket_test and alpn_test of the lxin/quic tree the host found
(QUICHSD_QUIC_SRC), in both roles where the program has both: certificate handshakes (our
client verifies the server against the CA), PSK (libquic's identity:hexkey files),
resumption and 0-RTT (ticket_test), ALPN lists and the preferred address alpn_test checks.
Keys come from the tree's own tests/keys/ca_cert_pkey_psk.sh, run in a temporary directory.

The peers run as subprocesses (line-buffered through stdbuf, so their output survives a
kill) with timeouts; every failure message carries the peer's output.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from quichsd import HandshakeError, QuicSocket, abi, quic_client_handshake, quic_server_handshake
from tests.qemu.guest.kernel import REPO, modprobe, quic_tree

PEER_TIMEOUT = 120.0          # a whole peer run, TCG included
HANDSHAKE_TIMEOUT = 60.0
HELLO_SERVER = b"hello quic server!"
HELLO_CLIENT = b"hello quic client!"
BACK_SERVER = b"hello quic server, I'm back!"
BACK_CLIENT = b"hello quic client! welcome back!"
PSK_CLIENT_IDENTITY = b"test2"     # client-psk.txt lists test2 first; libquic uses the first
SERVER_NAME = "server.test"        # the SAN of the script's server certificate


# ---- peers ------------------------------------------------------------------------------

class Peer:
    """One libquic test program (or a quichsd CLI) in a subprocess, output in a file.

    As a context manager: any exception inside the block stops the peer and becomes an
    AssertionError that carries the peer's exit status and output."""

    def __init__(self, argv: list[str], workdir: Path, name: str, cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = workdir / f"{name}-{time.monotonic_ns()}.out"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - open while the peer runs; stop() closes it
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_bytes().decode(errors="replace")

    def describe(self) -> str:
        status = self.proc.poll()
        state = "running" if status is None else f"exit status {status}"
        return (f"--- {self.name} ({state}): {' '.join(self.argv)}\n{self.output()}"
                f"--- end of {self.name} output")

    def wait(self, timeout: float = PEER_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.name} did not finish within {timeout:.0f} s\n"
                                 f"{self.describe()}") from None

    def wait_for(self, pattern: str, count: int = 1, timeout: float = PEER_TIMEOUT) -> list[re.Match[str]]:
        """Until `pattern` (a regex) matched `count` lines of the output."""
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.output(), re.MULTILINE))
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                found = list(re.finditer(pattern, self.output(), re.MULTILINE))
                if len(found) >= count:
                    return found
                raise AssertionError(f"{self.name} exited before printing {pattern!r} ×{count}\n"
                                     f"{self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not print {pattern!r} ×{count} within "
                                     f"{timeout:.0f} s\n{self.describe()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is not None and isinstance(exc, Exception):
                self.stop()
                if " ".join(self.argv) not in str(exc):   # unless the message shows this peer already
                    raise AssertionError(f"{type(exc).__name__}: {exc}\n{self.describe()}") from exc
        finally:
            self.stop()
            self.log.close()


class Programs:
    """The built tree: its test programs and the keys its script made."""

    def __init__(self, tree: Path, keys: Path, workdir: Path) -> None:
        self.tests = tree / "tests"
        self.keys = keys
        self.workdir = workdir

    def key(self, name: str) -> str:
        return str(self.keys / name)

    def start(self, program: str, *args: str) -> Peer:
        argv = ["stdbuf", "-oL", "-eL", str(self.tests / program), *args]
        return Peer(argv, self.workdir, f"{program}-{args[0]}", self.tests)

    def cli(self, *args: str) -> Peer:
        argv = [sys.executable, "-m", "quichsd", *args]
        return Peer(argv, self.workdir, f"quichsd-{args[0]}", REPO)


@pytest.fixture(scope="module")
def tree() -> Path:
    tree = quic_tree()
    for program in ("sample_test", "ticket_test", "alpn_test"):
        if not (tree / "tests" / program).exists():
            pytest.skip(f"{tree}/tests/{program} is not built (make -C {tree}/tests)")
    modprobe("quic")
    return tree


@pytest.fixture(scope="module")
def keys(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA, server and client certificates and PSK files from lxin/quic's own script."""
    d = tmp_path_factory.mktemp("libquic-keys")
    script = tree / "tests" / "keys" / "ca_cert_pkey_psk.sh"
    out = subprocess.run(["bash", str(script)], cwd=d, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{script} failed:\n{out.stdout}\n{out.stderr}"
    for name in ("ca-cert.pem", "server-cert.pem", "server-key.pem", "server-psk.txt", "client-psk.txt"):
        assert (d / name).exists(), f"{script} made no {name}:\n{out.stdout}\n{out.stderr}"
    return d


@pytest.fixture
def programs(tree: Path, keys: Path, tmp_path: Path) -> Programs:
    return Programs(tree, keys, tmp_path)


def free_port(count: int = 1, hosts: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """A UDP port P with P..P+count-1 free on every host of `hosts`."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + count > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for p in range(port, port + count):
                for host in hosts:
                    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
                    held.append(s)
                    s.bind((host, p))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return port
    raise AssertionError("no free UDP port range")


def wait_listening(port: int, peer: Peer, timeout: float = PEER_TIMEOUT) -> None:
    """Until a QUIC listener on `port` shows in /proc/net/quic/eps (the module's listeners)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            lines = Path("/proc/net/quic/eps").read_text().splitlines()[1:]
        except FileNotFoundError:
            lines = []
        if any(re.search(rf":{port}\s", line) for line in lines):
            return
        if peer.proc.poll() is not None:
            raise AssertionError(f"{peer.name} exited before listening on {port}\n{peer.describe()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{peer.name} not listening on {port} after {timeout:.0f} s\n"
                                 f"{peer.describe()}")
        time.sleep(0.05)


def read_message(sock: QuicSocket, timeout: float = 60.0) -> tuple[bytes, int]:
    """One stream's data up to its FIN: (data, stream id)."""
    sock.settimeout(timeout)
    data, sid = b"", None
    while True:
        chunk, stream_id, fin = sock.recv()
        if sid is None:
            sid = stream_id
        assert stream_id == sid, f"data on stream {stream_id} while reading stream {sid}"
        data += chunk
        if fin:
            return data, sid


def wait_closed(sock: QuicSocket, timeout: float = 60.0) -> None:
    """Until the peer closes the connection: recv then fails; no more stream data."""
    sock.settimeout(timeout)
    try:
        data, sid, fin = sock.recv()
    except TimeoutError:
        raise AssertionError(f"the peer did not close the connection within {timeout:.0f} s") from None
    except OSError:
        return
    raise AssertionError(f"unexpected data after the exchange: {data!r} on stream {sid}")


def kernel_socket(family: int = socket.AF_INET) -> QuicSocket:
    sock = QuicSocket(family, backend="kernel")
    assert sock.backend_name == "kernel"
    return sock


def listener(port: int, alpns: str, host: str = "127.0.0.1") -> QuicSocket:
    sock = kernel_socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, alpns.encode())
    sock.bind((host, port))
    sock.listen(4)
    sock.settimeout(PEER_TIMEOUT)
    return sock


def sockaddr_in(host: str, port: int) -> bytes:
    """struct sockaddr_in for SOL_QUIC options that take an address."""
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


def certificate(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def line(text: str) -> str:
    """A regex matching `text` as printed."""
    return re.escape(text)


# ---- our client against sample_test server ----------------------------------------------

def test_client_certificate_against_sample_server(programs: Programs) -> None:
    """Certificate handshake: our client verifies sample_test's server against the CA and
    checks its name; then sample_test's exchange (our uni stream 2, its answer on 1)."""
    port = free_port()
    p = programs
    with p.start("sample_test", "server", "127.0.0.1", str(port), p.key("server-key.pem"),
                 p.key("server-cert.pem"), "sample") as server:
        wait_listening(port, server)
        with kernel_socket() as sock:
            sock.connect(("127.0.0.1", port))
            result = quic_client_handshake(sock, None, SERVER_NAME, "sample", cafile=p.key("ca-cert.pem"),
                                           timeout=HANDSHAKE_TIMEOUT)
            assert result.alpn == "sample"
            assert result.psk_identity is None and not result.resumed and not result.peer_closed
            assert result.peer_certificates[0] == certificate(p.key("server-cert.pem"))
            assert sock.send(HELLO_SERVER, 2, new=True, fin=True) == len(HELLO_SERVER)
            assert read_message(sock) == (HELLO_CLIENT, 1)
            server.wait_for(line(f"send '{HELLO_CLIENT.decode()}' on stream 1"))
        assert server.wait() == 0, server.describe()
        out = server.output()
        assert f"recv '{HELLO_SERVER.decode()}' on stream 2" in out, server.describe()


def test_client_rejects_sample_server_from_another_ca(programs: Programs, tmp_path: Path) -> None:
    """The verification is real: a CA that did not sign the server's certificate makes our
    client fail with EACCES (a certificate alert), and sample_test's handshake fails."""
    from cryptography.hazmat.primitives import serialization

    from tests.pki import test_ca

    other = tmp_path / "other-ca.pem"
    other.write_bytes(test_ca().cert.public_bytes(serialization.Encoding.PEM))
    port = free_port()
    p = programs
    with p.start("sample_test", "server", "127.0.0.1", str(port), p.key("server-key.pem"),
                 p.key("server-cert.pem"), "sample") as server:
        wait_listening(port, server)
        with kernel_socket() as sock:
            sock.connect(("127.0.0.1", port))
            with pytest.raises(HandshakeError) as failed:
                quic_client_handshake(sock, None, SERVER_NAME, "sample", cafile=str(other),
                                      timeout=HANDSHAKE_TIMEOUT)
            assert failed.value.errno == errno.EACCES
            assert failed.value.alert is not None
            assert failed.value.alert.name in ("unknown_ca", "bad_certificate"), failed.value
        status = server.wait()
        assert status != 0, server.describe()
        assert "recv '" not in server.output(), server.describe()


def test_client_psk_against_sample_server(programs: Programs) -> None:
    """PSK: libquic's client file (test2 first) against its server file (test1, test2)."""
    port = free_port()
    p = programs
    with p.start("sample_test", "server", "127.0.0.1", str(port), p.key("server-psk.txt"), "none",
                 "sample") as server:
        wait_listening(port, server)
        with kernel_socket() as sock:
            sock.connect(("127.0.0.1", port))
            result = quic_client_handshake(sock, p.key("client-psk.txt"), None, "sample",
                                           timeout=HANDSHAKE_TIMEOUT)
            assert result.alpn == "sample"
            assert result.psk_identity == PSK_CLIENT_IDENTITY
            assert result.peer_certificates == ()
            assert sock.send(HELLO_SERVER, 2, new=True, fin=True) == len(HELLO_SERVER)
            assert read_message(sock) == (HELLO_CLIENT, 1)
            server.wait_for(line(f"send '{HELLO_CLIENT.decode()}' on stream 1"))
        assert server.wait() == 0, server.describe()
        assert f"recv '{HELLO_SERVER.decode()}' on stream 2" in server.output(), server.describe()


def test_client_wrong_psk_against_sample_server(programs: Programs, tmp_path: Path) -> None:
    """The PSK is really used: identity test2 with another key fails both sides."""
    wrong = tmp_path / "wrong-psk.txt"
    wrong.write_text("test2:" + "00" * 32 + "\n")
    port = free_port()
    p = programs
    with p.start("sample_test", "server", "127.0.0.1", str(port), p.key("server-psk.txt"), "none",
                 "sample") as server:
        wait_listening(port, server)
        with kernel_socket() as sock:
            sock.connect(("127.0.0.1", port))
            with pytest.raises(HandshakeError):
                quic_client_handshake(sock, str(wrong), None, "sample", timeout=HANDSHAKE_TIMEOUT)
        assert server.wait() != 0, server.describe()
        assert "recv '" not in server.output(), server.describe()


def test_client_ipv6_against_sample_server(programs: Programs) -> None:
    port = free_port(hosts=("::1",))
    p = programs
    with p.start("sample_test", "server", "::1", str(port), p.key("server-key.pem"),
                 p.key("server-cert.pem"), "sample") as server:
        wait_listening(port, server)
        with kernel_socket(socket.AF_INET6) as sock:
            sock.connect(("::1", port))
            result = quic_client_handshake(sock, None, SERVER_NAME, "sample", cafile=p.key("ca-cert.pem"),
                                           timeout=HANDSHAKE_TIMEOUT)
            assert result.alpn == "sample"
            assert result.peer_certificates[0] == certificate(p.key("server-cert.pem"))
            sock.send(HELLO_SERVER, 2, new=True, fin=True)
            assert read_message(sock) == (HELLO_CLIENT, 1)
            server.wait_for(line(f"send '{HELLO_CLIENT.decode()}' on stream 1"))
        assert server.wait() == 0, server.describe()
        assert f"recv '{HELLO_SERVER.decode()}' on stream 2" in server.output(), server.describe()


@pytest.mark.parametrize("mode", ["certificate", "psk"])
def test_cli_client_against_sample_server(programs: Programs, mode: str) -> None:
    """`quichsd client --data` against sample_test's server: its answer is what we print."""
    port = free_port()
    p = programs
    if mode == "certificate":
        server_args = [p.key("server-key.pem"), p.key("server-cert.pem")]
        client_args = ["--cafile", p.key("ca-cert.pem"), "--sni", SERVER_NAME]
        peer = "peer=" + re.escape(certificate(p.key("server-cert.pem")).subject.rfc4514_string())
    else:
        server_args = [p.key("server-psk.txt"), "none"]
        client_args = ["--psk", p.key("client-psk.txt")]
        peer = "peer=psk:test2"
    with p.start("sample_test", "server", "127.0.0.1", str(port), *server_args, "sample") as server:
        wait_listening(port, server)
        with p.cli("client", f"127.0.0.1:{port}", "--alpn", "sample", "--backend", "kernel",
                   "--data", HELLO_SERVER.decode(), *client_args) as client:
            assert client.wait() == 0, client.describe()
            out = client.output()
            succeeded = r"handshake succeeded \(kernel backend\): alpn=sample .*" + peer + " resumed=no"
            assert re.search(succeeded, out), client.describe()
            assert f"echo: {HELLO_CLIENT.decode()}" in out, client.describe()
        assert server.wait() == 0, server.describe()
        assert f"recv '{HELLO_SERVER.decode()}' on stream 0" in server.output(), server.describe()


# ---- our server against sample_test client ----------------------------------------------

@pytest.mark.parametrize("mode", ["certificate", "psk"])
def test_server_against_sample_client(programs: Programs, mode: str) -> None:
    """Our server API: sample_test's client sends on uni stream 2; we answer on stream 1."""
    port = free_port()
    p = programs
    client_psk = p.key("client-psk.txt") if mode == "psk" else "none"
    with (listener(port, "sample") as lsock,
          p.start("sample_test", "client", "127.0.0.1", str(port), client_psk, SERVER_NAME,
                  "sample") as client):
        conn, peer = lsock.accept()
        with conn:
            assert peer is not None and peer[0] == "127.0.0.1"
            if mode == "certificate":
                result = quic_server_handshake(conn, p.key("server-key.pem"), p.key("server-cert.pem"),
                                               "sample", timeout=HANDSHAKE_TIMEOUT)
                assert result.psk_identity is None
            else:
                result = quic_server_handshake(conn, p.key("server-psk.txt"), None, "sample",
                                               timeout=HANDSHAKE_TIMEOUT)
                assert result.psk_identity == PSK_CLIENT_IDENTITY
            assert result.alpn == "sample" and not result.peer_closed and not result.resumed
            assert read_message(conn) == (HELLO_SERVER, 2)
            assert conn.send(HELLO_CLIENT, 1, new=True, fin=True) == len(HELLO_CLIENT)
            assert client.wait() == 0, client.describe()
        out = client.output()
        assert f"send '{HELLO_SERVER.decode()}' on stream 2" in out, client.describe()
        assert f"recv '{HELLO_CLIENT.decode()}' on stream 1" in out, client.describe()


def test_server_ipv6_against_sample_client(programs: Programs) -> None:
    port = free_port(hosts=("::1",))
    p = programs
    with (listener(port, "sample", host="::1") as lsock,
          p.start("sample_test", "client", "::1", str(port), "none", SERVER_NAME, "sample") as client):
        conn, peer = lsock.accept()
        with conn:
            assert peer is not None and peer[0] == "::1"
            result = quic_server_handshake(conn, p.key("server-key.pem"), p.key("server-cert.pem"),
                                           "sample", timeout=HANDSHAKE_TIMEOUT)
            assert result.alpn == "sample" and not result.peer_closed
            assert read_message(conn) == (HELLO_SERVER, 2)
            conn.send(HELLO_CLIENT, 1, new=True, fin=True)
            assert client.wait() == 0, client.describe()
        assert f"recv '{HELLO_CLIENT.decode()}' on stream 1" in client.output(), client.describe()


def test_server_unknown_psk_identity_against_sample_client(programs: Programs, tmp_path: Path) -> None:
    """sample_test's client offers test2; our server knows only test1 and no certificate:
    the handshake fails on both sides, ours with EACCES."""
    only_test1 = tmp_path / "server-test1.txt"
    entries = Path(programs.key("server-psk.txt")).read_text().splitlines()
    only_test1.write_text(next(entry for entry in entries if entry.startswith("test1:")) + "\n")
    port = free_port()
    p = programs
    with (listener(port, "sample") as lsock,
          p.start("sample_test", "client", "127.0.0.1", str(port), p.key("client-psk.txt"), "none",
                  "sample") as client):
        conn, _ = lsock.accept()
        with conn:
            with pytest.raises(HandshakeError) as failed:
                quic_server_handshake(conn, str(only_test1), None, "sample", timeout=HANDSHAKE_TIMEOUT)
            assert failed.value.errno == errno.EACCES, failed.value
            assert client.wait() != 0, client.describe()
        assert "recv '" not in client.output(), client.describe()


@pytest.mark.parametrize("mode", ["certificate", "psk"])
def test_cli_server_against_sample_client(programs: Programs, mode: str) -> None:
    """`quichsd server` echoes sample_test's uni stream 2 on its own stream 1."""
    port = free_port()
    p = programs
    if mode == "certificate":
        server_args = ["--cert", p.key("server-cert.pem"), "--key", p.key("server-key.pem")]
        client_psk, peer = "none", "peer=-"
    else:
        server_args = ["--psk", p.key("server-psk.txt")]
        client_psk, peer = p.key("client-psk.txt"), "peer=psk:test2"
    with p.cli("server", "--listen", f"127.0.0.1:{port}", "--alpn", "sample", "--backend", "kernel",
               *server_args) as server:
        server.wait_for(r"^listening on .* \(kernel backend\)")
        wait_listening(port, server)
        with p.start("sample_test", "client", "127.0.0.1", str(port), client_psk, SERVER_NAME,
                     "sample") as client:
            assert client.wait() == 0, client.describe()
            assert f"recv '{HELLO_SERVER.decode()}' on stream 1" in client.output(), client.describe()
            server.wait_for(r"handshake with 127\.0\.0\.1:\d+ succeeded: alpn=sample .*" + re.escape(peer)
                            + " resumed=no 0rtt=no")
        assert "failed" not in server.output(), server.describe()


# ---- session resumption and 0-RTT: ticket_test ------------------------------------------

def test_client_resumes_with_early_data_against_ticket_server(programs: Programs) -> None:
    """Our client: a full handshake that collects ticket_test's ticket, then a resumed one
    with 0-RTT stream data, which its server answers ("welcome back")."""
    port = free_port()
    p = programs
    with p.start("ticket_test", "server", "127.0.0.1", str(port), p.key("server-key.pem"),
                 p.key("server-cert.pem"), "ticket") as server:
        wait_listening(port, server)
        with kernel_socket() as sock:
            sock.connect(("127.0.0.1", port))
            first = quic_client_handshake(sock, None, SERVER_NAME, "ticket", cafile=p.key("ca-cert.pem"),
                                          ticket_wait=10.0, timeout=HANDSHAKE_TIMEOUT)
            assert first.alpn == "ticket" and not first.resumed and not first.early_data_accepted
            assert first.peer_certificates[0] == certificate(p.key("server-cert.pem"))
            assert first.session_data, "no session ticket from ticket_test's server"
            sock.send(HELLO_SERVER, 2, new=True, fin=True)
            assert read_message(sock) == (HELLO_CLIENT, 1)
        server.wait_for(r"^wait for the client next connection")
        with kernel_socket() as sock:
            sock.connect(("127.0.0.1", port))
            second = quic_client_handshake(sock, None, SERVER_NAME, "ticket", cafile=p.key("ca-cert.pem"),
                                           session_data=first.session_data, early_data=True,
                                           early_stream_data=BACK_SERVER, timeout=HANDSHAKE_TIMEOUT)
            assert second.alpn == "ticket"
            assert second.resumed, "ticket_test's server did not resume the session"
            assert second.early_data_accepted, "ticket_test's server refused 0-RTT"
            assert read_message(sock) == (BACK_CLIENT, 1)
            server.wait_for(line(f"send '{BACK_CLIENT.decode()}' on stream 1"))
        assert server.wait() == 0, server.describe()
        out = server.output()
        assert f"recv '{HELLO_SERVER.decode()}' on stream 2" in out, server.describe()
        assert f"recv '{BACK_SERVER.decode()}' on stream 0" in out, server.describe()


def test_cli_client_resumes_against_ticket_server(programs: Programs, tmp_path: Path) -> None:
    """`quichsd client --session FILE`: the first run stores the ticket, the second resumes
    and sends --early-data as 0-RTT; ticket_test's server answers both."""
    port = free_port()
    p = programs
    session = tmp_path / "session.bin"
    common = ["--alpn", "ticket", "--backend", "kernel", "--cafile", p.key("ca-cert.pem"),
              "--sni", SERVER_NAME, "--session", str(session)]
    with p.start("ticket_test", "server", "127.0.0.1", str(port), p.key("server-key.pem"),
                 p.key("server-cert.pem"), "ticket") as server:
        wait_listening(port, server)
        with p.cli("client", f"127.0.0.1:{port}", *common, "--data", HELLO_SERVER.decode()) as first:
            assert first.wait() == 0, first.describe()
            out = first.output()
            succeeded = r"handshake succeeded \(kernel backend\): alpn=ticket .* resumed=no 0rtt=no"
            assert re.search(succeeded, out), first.describe()
            assert f"echo: {HELLO_CLIENT.decode()}" in out, first.describe()
            assert session.exists() and session.stat().st_size > 0, first.describe()
        server.wait_for(r"^wait for the client next connection")
        with p.cli("client", f"127.0.0.1:{port}", *common, "--early-data", BACK_SERVER.decode()) as second:
            assert second.wait() == 0, second.describe()
            out = second.output()
            succeeded = r"handshake succeeded \(kernel backend\): alpn=ticket .* resumed=yes 0rtt=yes"
            assert re.search(succeeded, out), second.describe()
            assert f"echo of 0-RTT data: {BACK_CLIENT.decode()}" in out, second.describe()
        assert server.wait() == 0, server.describe()
        out = server.output()
        assert f"recv '{HELLO_SERVER.decode()}' on stream 0" in out, server.describe()
        assert f"recv '{BACK_SERVER.decode()}' on stream 0" in out, server.describe()


def test_server_resumes_ticket_client_with_early_data(programs: Programs) -> None:
    """Our server API serving ticket_test's client: a full handshake that issues a ticket,
    then the resumed connection whose 0-RTT data (uni stream 2) we accept and answer."""
    port = free_port()
    p = programs
    with (listener(port, "ticket") as lsock,
          p.start("ticket_test", "client", "127.0.0.1", str(port), "ticket") as client):
        results = []
        exchanges = [(HELLO_SERVER, HELLO_CLIENT), (BACK_SERVER, BACK_CLIENT)]
        for number, (received, answer) in enumerate(exchanges):
            conn, _ = lsock.accept()
            with conn:
                result = quic_server_handshake(conn, p.key("server-key.pem"), p.key("server-cert.pem"),
                                               "ticket", early_data=True, timeout=HANDSHAKE_TIMEOUT)
                results.append(result)
                assert result.alpn == "ticket" and not result.peer_closed
                assert read_message(conn) == (received, 2), f"connection {number + 1}"
                conn.send(answer, 1, new=True, fin=True)
                if number == 0:
                    client.wait_for(r"^start new connection with the session ticket used")
                else:
                    assert client.wait() == 0, client.describe()
        assert not results[0].resumed and not results[0].early_data_accepted
        assert results[1].resumed, "ticket_test's client did not resume"
        assert results[1].early_data_accepted, "our server did not accept ticket_test's 0-RTT"
        out = client.output()
        assert re.search(r"get the session ticket [1-9]\d* and transport param \d+", out), client.describe()
        assert f"recv '{HELLO_CLIENT.decode()}' on stream 1" in out, client.describe()
        assert f"send '{BACK_SERVER.decode()}' on stream 2" in out, client.describe()
        assert f"recv '{BACK_CLIENT.decode()}' on stream 1" in out, client.describe()


def test_cli_server_resumes_ticket_client(programs: Programs) -> None:
    """`quichsd server` serving ticket_test's client: the second handshake resumes with
    0-RTT, and both messages come back on stream 1."""
    port = free_port()
    p = programs
    with p.cli("server", "--listen", f"127.0.0.1:{port}", "--alpn", "ticket", "--backend", "kernel",
               "--cert", p.key("server-cert.pem"), "--key", p.key("server-key.pem")) as server:
        server.wait_for(r"^listening on .* \(kernel backend\)")
        wait_listening(port, server)
        with p.start("ticket_test", "client", "127.0.0.1", str(port), "ticket") as client:
            assert client.wait() == 0, client.describe()
            out = client.output()
            assert f"recv '{HELLO_SERVER.decode()}' on stream 1" in out, client.describe()
            assert f"recv '{BACK_SERVER.decode()}' on stream 1" in out, client.describe()
            succeeded = r"handshake with \S+ succeeded: alpn=ticket .* resumed=(\w+) 0rtt=(\w+)"
            found = server.wait_for(succeeded, 2)
            assert [m.groups() for m in found] == [("no", "no"), ("yes", "yes")], server.describe()
        assert "failed" not in server.output(), server.describe()


# ---- ALPN lists (and the preferred address): alpn_test ------------------------------------

ALPN_SERVER_LIST = "smbd, h3, ksmbd"   # alpn_test's server list
PREFERRED = "127.0.0.2"                # runtest's IPv4 -> IPv4 preferred address


def test_client_alpn_lists_against_alpn_server(programs: Programs) -> None:
    """alpn_test's server offers "smbd, h3, ksmbd" and sets a preferred address per
    connection (port + i); our client offers a list per connection, the kernel dispatches
    on it and both sides agree on the first of our list the server knows. Our kernel
    socket then moves to the preferred address, which the server checks."""
    port = free_port(4, hosts=("127.0.0.1", PREFERRED))
    p = programs
    offers = [("smbd", "smbd"), ("h3, smbd", "h3"), ("foo, ksmbd, h3", "ksmbd")]
    with p.start("alpn_test", "server", "127.0.0.1", str(port), p.key("server-key.pem"),
                 p.key("server-cert.pem"), PREFERRED) as server:
        wait_listening(port, server)
        for i, (offer, expected) in enumerate(offers, start=1):
            with kernel_socket() as sock:
                sock.connect(("127.0.0.1", port))
                result = quic_client_handshake(sock, None, SERVER_NAME, offer, cafile=p.key("ca-cert.pem"),
                                               timeout=HANDSHAKE_TIMEOUT)
                assert result.alpn == expected, f"connection {i} offering {offer!r}"
                assert server.wait_for(r"^ALPN: (\S+)$", i)[-1].group(1) == expected
                sock.send(HELLO_SERVER, -1, new=True, fin=True)
                assert read_message(sock)[0] == HELLO_CLIENT
                deadline = time.monotonic() + 30
                while sock.getpeername() != (PREFERRED, port + i) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert sock.getpeername() == (PREFERRED, port + i), \
                    f"connection {i}: not moved to the preferred address"
                server.wait_for(r"^LOCAL IP:PORT", i)
        assert server.wait() == 0, server.describe()
        out = server.output()
        assert re.findall(r"^ALPN: (\S+)$", out, re.MULTILINE) == [e for _, e in offers], server.describe()
        assert out.count(f'recv: "{HELLO_SERVER.decode()}", len: {len(HELLO_SERVER)}') == 3, server.describe()
        assert "EXPECTED" not in out, server.describe()


def test_server_alpn_list_against_alpn_client(programs: Programs) -> None:
    """Our server API with alpn_test's list on the listener and in the handshake, serving
    alpn_test's client (smbd, h3, ksmbd, one per connection); like alpn_test's server it
    sets a preferred address before each handshake, which the client checks it moved to."""
    port = free_port(4, hosts=("127.0.0.1", PREFERRED))
    p = programs
    with (listener(port, ALPN_SERVER_LIST) as lsock,
          p.start("alpn_test", "client", "127.0.0.1", str(port), PREFERRED) as client):
        for i, expected in enumerate(("smbd", "h3", "ksmbd"), start=1):
            conn, _ = lsock.accept()
            with conn:
                conn.setsockopt(abi.lib.QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(PREFERRED, port + i))
                result = quic_server_handshake(conn, p.key("server-key.pem"), p.key("server-cert.pem"),
                                               ALPN_SERVER_LIST, timeout=HANDSHAKE_TIMEOUT)
                assert result.alpn == expected, f"connection {i}"
                data, sid = read_message(conn)
                assert data == HELLO_SERVER and sid & 0x3 == 0, (data, sid)
                conn.send(HELLO_CLIENT, sid, fin=True)
                client.wait_for(r"^PEER IP:PORT", i)
                assert conn.getsockname() == (PREFERRED, port + i), f"connection {i}"
                wait_closed(conn)
        assert client.wait() == 0, client.describe()
        out = client.output()
        assert out.count(f'recv: "{HELLO_CLIENT.decode()}", len: {len(HELLO_CLIENT)}') == 3, client.describe()
        assert "EXPECTED" not in out, client.describe()


def test_cli_server_alpn_list_against_sample_client(programs: Programs) -> None:
    """`quichsd server --alpn smbd,h3,ksmbd` and sample_test's client offering "foo, h3":
    the kernel dispatches on h3, our server picks it, libquic's client accepts it."""
    port = free_port()
    p = programs
    with p.cli("server", "--listen", f"127.0.0.1:{port}", "--alpn", "smbd,h3,ksmbd", "--backend", "kernel",
               "--cert", p.key("server-cert.pem"), "--key", p.key("server-key.pem")) as server:
        server.wait_for(r"^listening on .* \(kernel backend\)")
        wait_listening(port, server)
        with p.start("sample_test", "client", "127.0.0.1", str(port), "none", SERVER_NAME,
                     "foo, h3") as client:
            assert client.wait() == 0, client.describe()
            assert f"recv '{HELLO_SERVER.decode()}' on stream 1" in client.output(), client.describe()
            server.wait_for(r"handshake with 127\.0\.0\.1:\d+ succeeded: alpn=h3 ")


def test_cli_client_alpn_list_against_sample_server(programs: Programs) -> None:
    """`quichsd client --alpn foo,ksmbd` against sample_test's server with alpn_test's list."""
    port = free_port()
    p = programs
    with p.start("sample_test", "server", "127.0.0.1", str(port), p.key("server-key.pem"),
                 p.key("server-cert.pem"), ALPN_SERVER_LIST) as server:
        wait_listening(port, server)
        with p.cli("client", f"127.0.0.1:{port}", "--alpn", "foo,ksmbd", "--backend", "kernel",
                   "--cafile", p.key("ca-cert.pem"), "--sni", SERVER_NAME,
                   "--data", HELLO_SERVER.decode()) as client:
            assert client.wait() == 0, client.describe()
            out = client.output()
            assert re.search(r"handshake succeeded \(kernel backend\): alpn=ksmbd ", out), client.describe()
            assert f"echo: {HELLO_CLIENT.decode()}" in out, client.describe()
        assert server.wait() == 0, server.describe()
