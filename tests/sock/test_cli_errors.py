"""Every user error of every `quichsd` subcommand, as a new user meets it: one line on stderr,
no traceback, and the exit status `quichsd --help` documents (quichsd.cli.EPILOG)."""
from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from quichsd.cli import EPILOG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from tests.processes import QUICHSD, start, stop


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory, pki) -> dict[str, str]:
    d = tmp_path_factory.mktemp("cli-errors")
    other_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (d / "other-key.pem").write_bytes(other_key)
    (d / "bad-psk.txt").write_text("no colon here\n")
    (d / "empty-psk.txt").write_text("# nothing\n")
    (d / "not-a-session").write_bytes(b"not session data")
    return {"cert": pki.cert_file, "key": pki.key_file, "ca": pki.ca_file, "dir": str(d),
            **{name: str(d / name) for name in ("other-key.pem", "bad-psk.txt", "empty-psk.txt",
                                                "not-a-session")}}


@pytest.fixture(scope="module")
def busy_port() -> int:
    """A UDP port something else holds for the whole module."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    yield holder.getsockname()[1]
    holder.close()


def server(*extra: str, listen: str = "127.0.0.1:0") -> list[str]:
    return ["server", "--listen", listen, "--alpn", "h3", "--backend", "sim", *extra]


def client(*extra: str, to: str = "127.0.0.1:9") -> list[str]:
    return ["client", to, "--alpn", "h3", "--backend", "sim", *extra]


# (arguments, status, what the line says); {name} is a path from `files`, {busy} the held port.
CASES = [
    (["bogus"], EXIT_USAGE, "invalid choice"),
    ([], EXIT_USAGE, "required"),
    (["demo", "--what"], EXIT_USAGE, "unrecognized arguments"),
    (["server", "--listen", "127.0.0.1:1"], EXIT_USAGE, "--alpn"),
    (server(), EXIT_USAGE, "needs --cert and --key, or --psk"),
    (server("--psk", "{empty-psk.txt}", listen="nowhere"), EXIT_USAGE, "expected ADDR:PORT"),
    (server("--psk", "{empty-psk.txt}", listen="127.0.0.1:70000"), EXIT_USAGE, "expected ADDR:PORT"),
    (server("--cert", "{dir}/missing.pem", "--key", "{key}"), EXIT_USAGE,
     "certificate file {dir}/missing.pem: No such file or directory"),
    (server("--cert", "{cert}", "--key", "{dir}/missing.pem"), EXIT_USAGE,
     "private key file {dir}/missing.pem"),
    (server("--cert", "{cert}", "--key", "{other-key.pem}"), EXIT_USAGE, "does not match certificate"),
    (server("--cert", "{cert}", "--key", "{ca}"), EXIT_USAGE, "private key file {ca}"),
    (server("--cert", "{key}", "--key", "{key}"), EXIT_USAGE, "certificate file {key}"),
    (server("--psk", "{dir}/missing.txt"), EXIT_USAGE, "PSK file {dir}/missing.txt: No such file"),
    (server("--psk", "{bad-psk.txt}"), EXIT_USAGE,
     "PSK file {bad-psk.txt}, line 1: expected identity:hexkey"),
    (server("--psk", "{empty-psk.txt}"), EXIT_USAGE, "no identity:hexkey line"),
    (server("--cert", "{cert}", "--key", "{key}", "--alpn", "h3,"), EXIT_USAGE, "--alpn"),
    (server("--cert", "{cert}", "--key", "{key}", "--handshake-workers", "0"), EXIT_USAGE, "at least 1"),
    (server("--cert", "{cert}", "--key", "{key}", "--backlog", "x"), EXIT_USAGE, "expected a whole number"),
    (server("--cert", "{cert}", "--key", "{key}", listen="127.0.0.1:{busy}"), EXIT_FAILED,
     "cannot listen on 127.0.0.1:{busy}: Address already in use"),
    (server("--cert", "{cert}", "--key", "{key}", listen="192.0.2.1:4433"), EXIT_FAILED,
     "cannot listen on 192.0.2.1:4433: Cannot assign requested address"),
    (client(to="no-port"), EXIT_USAGE, "expected ADDR:PORT"),
    (client("--cafile", "{dir}/missing.pem"), EXIT_USAGE, "trust file {dir}/missing.pem"),
    (client("--psk", "{bad-psk.txt}"), EXIT_USAGE, "PSK file"),
    (client("--session", "{not-a-session}"), EXIT_USAGE, "session file {not-a-session}: not session data"),
    (client("--timeout", "0"), EXIT_USAGE, "--timeout"),
    (client(to="no-such-host.invalid:4433"), EXIT_FAILED, "cannot resolve no-such-host.invalid"),
    (["daemon", "--workers", "-1"], EXIT_USAGE, "--workers: must be at least 1, got -1"),
    (["daemon", "--workers", "many"], EXIT_USAGE, "--workers"),
    (["status", "--bus", "unix:path={dir}/no-bus"], EXIT_FAILED, "no daemon answered"),
]


def test_every_user_error_is_one_line_and_a_documented_status(files, busy_port) -> None:
    # All at once: each is a Python start-up, and they do not depend on each other.
    names = {**files, "busy": str(busy_port)}

    def fill(text: str) -> str:
        for name, value in names.items():
            text = text.replace("{" + name + "}", value)
        return text

    runs = []
    try:
        for args, status, expected in CASES:
            argv = [fill(a) for a in args]
            proc = start(QUICHSD + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            runs.append((argv, status, fill(expected), proc))
        for argv, status, expected, proc in runs:
            out, err = proc.communicate(timeout=60)
            line = one_line(err)
            assert proc.returncode == status, (argv, proc.returncode, err)
            assert expected in line, (argv, line)
            assert line.startswith("quichsd"), line
            assert out == "", (argv, out)  # nothing "listening", nothing half-done
    finally:  # a case that listened instead of failing is not left running
        for *_, proc in runs:
            stop(proc)


def test_help_documents_the_exit_statuses() -> None:
    for argv in ([], ["server"], ["client"], ["daemon"]):
        result = subprocess.run(QUICHSD + argv + ["--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0
        assert EPILOG.splitlines()[0] in result.stdout
        for status in (EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED):
            assert f"\n  {status} " in result.stdout, result.stdout


def test_daemon_config_error_is_tlshds_two_lines(tmp_path) -> None:
    """The daemon logs a configuration it cannot load as tlshd does (an ERR line, then the
    NOTICE "Shutting down."), with status 1; with --foreground on stderr, no traceback."""
    result = subprocess.run(QUICHSD + ["daemon", "--foreground", "-c", str(tmp_path / "missing.conf")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_FAILED
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Failed to load config file" in errors[0], result.stderr
    assert result.stderr.splitlines()[-1].endswith("NOTICE Shutting down."), result.stderr


def test_a_silent_server_is_a_timeout_naming_the_alpn() -> None:
    """Nothing answers (a dead port, or a server without a listener for the ALPN): the
    client says it timed out, heard nothing, and which ALPN it offered; status 1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = subprocess.run(QUICHSD + client("--timeout", "1", to=f"127.0.0.1:{port}"),
                                capture_output=True, text=True, timeout=60)
        silent.settimeout(0)
        assert len(silent.recv(2048)) >= 1200  # it did send its Initial here
    line = one_line(result.stderr)
    assert result.returncode == EXIT_FAILED
    assert line.startswith("quichsd client: handshake failed: handshake timed out"), line
    assert "no answer from the server" in line and "offered ALPN h3" in line, line


def interrupted(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INTERRUPTED, err
    return one_line(err)


def test_ctrl_c_on_the_server(pki) -> None:
    proc = start(QUICHSD + server("--cert", pki.cert_file, "--key", pki.key_file),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().startswith("listening on")
        assert interrupted(proc) == "quichsd server: interrupted"
    finally:
        stop(proc)


def test_ctrl_c_on_the_client_in_its_handshake() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.settimeout(30)
        proc = subprocess.Popen(QUICHSD + client(to=f"127.0.0.1:{silent.getsockname()[1]}"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        silent.recv(2048)  # its Initial: the client is in the handshake
        assert interrupted(proc) == "quichsd client: interrupted"


def test_ctrl_c_inside_a_lock_release_is_still_an_interrupt(monkeypatch, capsys) -> None:
    """Ctrl-C landing between a lock's acquire and release in the interrupted code surfaces
    as RuntimeError('cannot release un-acquired lock') raised while handling the
    KeyboardInterrupt (seen once in CI on the client test above): still exit 130 and one
    line, not 'internal error'. An unrelated RuntimeError stays a bug (70)."""
    import threading

    import quichsd.cli as cli

    def ctrl_c_in_a_lock(args) -> int:
        lock = threading.Lock()
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            lock.release()  # RuntimeError, with the KeyboardInterrupt as its context
        return 0

    monkeypatch.setattr(cli, "run", ctrl_c_in_a_lock)
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert cli.main(client()) == EXIT_INTERRUPTED
    finally:  # the CLI ignores a second Ctrl-C on its way out; pytest must not
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err.strip() == "quichsd client: interrupted"

    def a_bug(args) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "run", a_bug)
    assert cli.main(client()) == 70
    assert "internal error: RuntimeError: a bug" in capsys.readouterr().err


def test_a_missing_credential_is_a_handshake_error_in_the_api(tmp_path: Path) -> None:
    """The README's promise: failures raise HandshakeError, a missing file included."""
    import errno

    from quichsd import HandshakeConfig, HandshakeError, QuicSocket, quic_handshake
    from quichsd.handshake import quic_server_handshake

    with QuicSocket(socket.AF_INET, backend="sim") as sock:
        sock.connect(("127.0.0.1", 9))
        config = HandshakeConfig(alpns=["h3"], cafile=str(tmp_path / "missing-ca.pem"), timeout=1)
        with pytest.raises(HandshakeError) as caught:
            quic_handshake(sock, config)
        assert caught.value.errno == errno.EIO and "missing-ca.pem" in caught.value.strerror
    with QuicSocket(socket.AF_INET, backend="sim") as sock:
        with pytest.raises(HandshakeError) as caught:
            quic_server_handshake(sock, str(tmp_path / "missing-psk.txt"), alpns="h3")
        assert caught.value.errno == errno.EIO and "missing-psk.txt" in caught.value.strerror
