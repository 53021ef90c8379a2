"""Address validation in the simulation (RFC 9000 §8.1, §17.2.5, §7.3; RFC 9001 §5.8):
stateless tokens, Retry on both sides, NEW_TOKEN and QUIC_SOCKOPT_TOKEN with the kernel's
semantics, admission limits. Real UDP sockets on loopback, v1 and v2."""
from __future__ import annotations

import errno
import socket
import threading
import time

import pytest

from quichsd import HandshakeConfig, HandshakeError, QuicSocket, abi, quic_handshake
from quichsd.quic.address_token import AddressTokens, TokenKind, kind_of
from quichsd.quic.errors import QuicError, QuicErrorCode
from quichsd.quic.versions import QUIC_V1, QUIC_V2
from quichsd.sock.sim import SimConnection, tparams
from quichsd.sock.sim.admission import AdmissionLimits
from quichsd.sock.sim.packets import build_retry
from quichsd.sock.sim.state import ConnState
from tests.sim.driver import sim_client

L = abi.lib
V1, V2 = QUIC_V1.number, QUIC_V2.number
VERSIONS = pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
ADDR = ("127.0.0.1", 40000)


# ---- tokens ----------------------------------------------------------------------------------


def test_token_round_trip_and_size() -> None:
    tokens = AddressTokens()
    odcid = bytes(range(8))
    retry = tokens.issue(TokenKind.RETRY, ADDR, odcid, 1000.0)
    assert kind_of(retry) is TokenKind.RETRY and len(retry) == 45
    valid = tokens.check(retry, ADDR, 1001.0)
    assert valid is not None and valid.kind is TokenKind.RETRY and valid.original_dcid == odcid
    regular = tokens.issue(TokenKind.REGULAR, ADDR, b"", 1000.0)
    assert kind_of(regular) is TokenKind.REGULAR and len(regular) == 37
    assert tokens.check(regular, ADDR, 1000.0 + 599).kind is TokenKind.REGULAR
    assert len(tokens.issue(TokenKind.RETRY, ADDR, bytes(20), 0.0)) <= 120  # kernel client limit


def test_token_is_bound_to_address_port_time_and_key() -> None:
    tokens = AddressTokens()
    retry = tokens.issue(TokenKind.RETRY, ADDR, b"12345678", 1000.0)
    regular = tokens.issue(TokenKind.REGULAR, ADDR, b"", 1000.0)
    assert tokens.check(retry, ("127.0.0.1", 40001), 1000.0) is None  # port, as the kernel
    assert tokens.check(retry, ("127.0.0.2", 40000), 1000.0) is None
    assert tokens.check(retry, ADDR, 1003.5) is None  # 3 s for Retry tokens
    assert tokens.check(regular, ADDR, 1000.0 + 601) is None  # 600 s for NEW_TOKEN tokens
    assert AddressTokens().check(retry, ADDR, 1000.0) is None  # another endpoint's key
    flipped = bytes([TokenKind.REGULAR]) + retry[1:]  # a kind byte changed in flight
    assert tokens.check(flipped, ADDR, 1000.0) is None
    assert tokens.check(retry[:-1] + bytes([retry[-1] ^ 1]), ADDR, 1000.0) is None
    assert tokens.check(b"\x01" + bytes(10), ADDR, 1000.0) is None
    assert tokens.check(b"\x07" + retry[1:], ADDR, 1000.0) is None
    # an IPv4-mapped IPv6 address is the same client
    assert tokens.check(retry, ("::ffff:127.0.0.1", 40000, 0, 0), 1000.0) is not None


# ---- the client's side of a Retry, packet by packet ------------------------------------------


def _client(version: int) -> tuple[SimConnection, bytes]:
    agent = sim_client(version=version)
    agent.start(0.0)
    (first,) = agent.send(0.0)
    return agent.conn, first


@VERSIONS
def test_client_follows_one_valid_retry(version: int) -> None:
    conn, _ = _client(version)
    qv = QUIC_V1 if version == V1 else QUIC_V2
    odcid, scid = conn.peer_cid, b"retryscid"
    conn.receive_datagram(build_retry(qv, conn.local_cid, scid, b"TOKEN", odcid), ADDR, 0.1)
    assert conn.retries_followed == 1 and conn.token == b"TOKEN"
    ((again, _),) = conn.datagrams_to_send(0.1)
    # the same ClientHello, to the Retry's SCID, with the token, under keys from that SCID
    assert again[6:6 + again[5]] == scid
    assert conn.token in again and len(again) >= 1200
    from quichsd.quic.packet_protection import initial_keys
    from quichsd.sock.sim.listener_peek import client_hello_alpn, client_initial_header, open_client_initial
    header = client_initial_header(again)
    assert header.token == b"TOKEN" and header.version == version
    opened = open_client_initial(again, header, initial_keys(scid, qv)[0])
    assert client_hello_alpn(opened.payload) == [b"quichsd-sim"]
    # a second Retry is ignored (§17.2.5.2)
    conn.receive_datagram(build_retry(qv, conn.local_cid, b"other", b"T2", odcid), ADDR, 0.2)
    assert conn.retries_followed == 1 and conn.peer_cid == scid and conn.token == b"TOKEN"


@VERSIONS
def test_client_ignores_bad_retries(version: int) -> None:
    conn, _ = _client(version)
    qv = QUIC_V1 if version == V1 else QUIC_V2
    other = QUIC_V2 if qv is QUIC_V1 else QUIC_V1
    odcid = conn.peer_cid
    good = build_retry(qv, conn.local_cid, b"scid0001", b"TOKEN", odcid)
    bad = [
        good[:-1] + bytes([good[-1] ^ 1]),  # integrity tag
        build_retry(qv, conn.local_cid, b"scid0001", b"TOKEN", b"not-odcid"),  # tag over another DCID
        build_retry(qv, conn.local_cid, b"scid0001", b"", odcid),  # empty token
        build_retry(qv, conn.local_cid, odcid, b"TOKEN", odcid),  # SCID = the DCID we used
        build_retry(other, conn.local_cid, b"scid0001", b"TOKEN", odcid),  # another version
    ]
    for datagram in bad:
        conn.receive_datagram(datagram, ADDR, 0.1)
        assert conn.retries_followed == 0 and conn.peer_cid == odcid and conn.state == ConnState.ESTABLISHING
    conn.receive_datagram(good, ADDR, 0.2)
    assert conn.retries_followed == 1


def test_retry_transport_parameters_are_checked() -> None:
    """§7.3: after a Retry the server must echo its SCID in retry_source_connection_id,
    and must not send one without a Retry; original_destination_connection_id is the
    client's very first DCID."""
    odcid, iscid, rscid = b"odcid-01", b"iscid-01", b"rscid-01"

    def blob(retry: bytes | None, original: bytes = odcid) -> bytes:
        return tparams.build_local_blob(tparams.LOCAL_DEFAULTS, is_client=False, local_cid=iscid,
                                        original_dcid=original, version=V1, peer_sent_version_info=False,
                                        reset_token=None, retry_scid=retry)

    ok = tparams.parse_peer_blob(blob(rscid), we_are_client=True, original_dcid=odcid, peer_cid=iscid,
                                 retry_scid=rscid)
    assert ok.initial_source_connection_id == iscid
    cases = [
        (blob(None), rscid, "no retry_source_connection_id"),
        (blob(b"another!"), rscid, "does not match the Retry"),
        (blob(rscid), None, "without a Retry"),
        (blob(rscid, original=rscid), rscid, "original_destination_connection_id"),
    ]
    for data, expected, why in cases:
        with pytest.raises(QuicError) as exc:
            tparams.parse_peer_blob(data, we_are_client=True, original_dcid=odcid, peer_cid=iscid,
                                    retry_scid=expected)
        assert exc.value.error_code == QuicErrorCode.TRANSPORT_PARAMETER_ERROR and why in exc.value.reason


# ---- over UDP: our server and our client --------------------------------------------------------


def client_config(pki, **kw) -> HandshakeConfig:
    defaults = dict(alpns=["h3"], hostname="localhost", cafile=pki.ca_file, timeout=5)
    return HandshakeConfig(**{**defaults, **kw})


class RetryServer:
    """A sim listener on loopback; each accepted connection runs the handshake and then
    `after(conn)`; results (or exceptions) in `results`."""

    def __init__(self, pki, *, validate: bool, version: int = 0, limits: AdmissionLimits | None = None,
                 after=None, alpn: str = "h3") -> None:
        self.sock = QuicSocket(socket.AF_INET, backend="sim")
        self.sock.setsockopt(L.QUIC_SOCKOPT_ALPN, alpn.encode())
        if validate or version:
            self.sock.setsockopt(L.QUIC_SOCKOPT_CONFIG, abi.pack_config(validate_peer_address=int(validate),
                                                                      version=version))
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        if limits is not None:
            self.sock.backend.endpoint.admission.limits = limits
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()[:2]
        self.config = HandshakeConfig(server=True, alpns=[alpn], cert_file=pki.cert_file,
                                      key_file=pki.key_file, timeout=5)
        self.after = after
        self.results: list = []
        self.done = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def stats(self):
        return self.sock.backend.endpoint_stats

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        try:
            result = quic_handshake(conn, self.config)
            if self.after is not None:
                result = self.after(conn)
        except Exception as exc:  # an outcome for the test to look at
            result = exc
        with self.done:
            self.results.append(result)
            self.done.notify_all()
        try:
            conn.settimeout(2)
            conn.recv()  # hold the connection until the client closes it
        except (OSError, TimeoutError):
            pass
        conn.close()

    def wait(self, n: int) -> list:
        with self.done:
            self.done.wait_for(lambda: len(self.results) >= n, 10)
        return self.results

    def stop(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def retry_server(pki):
    made: list[RetryServer] = []

    def make(**kw) -> RetryServer:
        srv = RetryServer(pki, **kw)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()


def connect(address, *, version: int = 0, token: bytes = b"", local: tuple | None = None,
            events: bool = False) -> QuicSocket:
    sock = QuicSocket(socket.AF_INET, backend="sim")
    if version:
        sock.setsockopt(L.QUIC_SOCKOPT_CONFIG, abi.pack_config(version=version))
    if token:
        sock.setsockopt(L.QUIC_SOCKOPT_TOKEN, token)
    if events:
        sock.setsockopt(L.QUIC_SOCKOPT_EVENT, abi.pack_event_option(L.QUIC_EVENT_NEW_TOKEN, True))
    if local is not None:
        sock.bind(local)
    sock.connect(address)
    return sock


def wait_for_token(sock: QuicSocket) -> bytes:
    """The NEW_TOKEN event's token (the server sends one at completion)."""
    sock.settimeout(5)
    item = sock.recv_item(4096)
    assert item.kind == "EVENT" and item.data[0] == L.QUIC_EVENT_NEW_TOKEN, item
    return item.data[1:]


@VERSIONS
def test_validating_server_retries_then_new_token_skips_it(pki, retry_server, version: int) -> None:
    srv = retry_server(validate=True, version=version)
    with connect(srv.address, version=version, events=True) as sock:
        quic_handshake(sock, client_config(pki))
        assert sock.backend.conn.version == version
        assert sock.backend.retries_followed == 1 and srv.stats.retries_sent == 1
        token = wait_for_token(sock)
        assert kind_of(token) is TokenKind.REGULAR
        assert sock.getsockopt(L.QUIC_SOCKOPT_TOKEN, 256) == token  # the kernel's one buffer
        with pytest.raises(OSError) as exc:
            sock.getsockopt(L.QUIC_SOCKOPT_TOKEN, len(token) - 1)
        assert exc.value.errno == errno.EINVAL
        port = sock.getsockname()[1]
    assert not isinstance(srv.wait(1)[0], Exception)
    # the token binds the address with its port (as the kernel's): same local port, no Retry
    with connect(srv.address, version=version, token=token, local=("127.0.0.1", port)) as sock:
        quic_handshake(sock, client_config(pki))
        assert sock.backend.retries_followed == 0 and srv.stats.retries_sent == 1
    # from another port it is worth nothing: a Retry again (§8.1.3: treated as no token)
    with connect(srv.address, version=version, token=token) as sock:
        quic_handshake(sock, client_config(pki))
        assert sock.backend.retries_followed == 1 and srv.stats.retries_sent == 2
    assert not any(isinstance(r, Exception) for r in srv.wait(3))


def test_forged_retry_token_is_invalid_token(pki, retry_server) -> None:
    srv = retry_server(validate=True)
    forged = bytes([TokenKind.RETRY]) + bytes(44)
    with connect(srv.address, token=forged) as sock, pytest.raises(HandshakeError):
        quic_handshake(sock, client_config(pki, timeout=3))
    info = abi.unpack_connection_close(sock.getsockopt(L.QUIC_SOCKOPT_CONNECTION_CLOSE, 256))
    assert info.errcode == QuicErrorCode.INVALID_TOKEN
    assert srv.stats.invalid_tokens == 1 and srv.stats.retries_sent == 0


def test_server_token_option_follows_the_kernel(pki, retry_server) -> None:
    """Server set sends a NEW_TOKEN, EAGAIN while the last one is unacknowledged (right
    after completion: the completion's own); get is always EINVAL; client set takes
    1..120 bytes."""
    outcome: dict = {}

    def after(conn) -> str:
        with pytest.raises(OSError) as get:
            conn.getsockopt(L.QUIC_SOCKOPT_TOKEN, 256)
        outcome["get"] = get.value.errno
        deadline = time.monotonic() + 5
        while True:  # until the client's ACK of the first NEW_TOKEN is in
            try:
                conn.setsockopt(L.QUIC_SOCKOPT_TOKEN, None)
                return "sent"
            except BlockingIOError:
                outcome["eagain"] = outcome.get("eagain", 0) + 1
                if time.monotonic() > deadline:
                    return "never acknowledged"
                time.sleep(0.005)

    srv = retry_server(validate=False, after=after)
    with pytest.raises(OSError) as exc:
        srv.sock.getsockopt(L.QUIC_SOCKOPT_TOKEN, 256)
    assert exc.value.errno == errno.EINVAL
    for bad in (b"", bytes(121)):
        probe = QuicSocket(socket.AF_INET, backend="sim")
        with pytest.raises(OSError) as exc:
            probe.setsockopt(L.QUIC_SOCKOPT_TOKEN, bad)
        assert exc.value.errno == errno.EINVAL
        probe.close()
    with connect(srv.address, events=True) as sock:
        quic_handshake(sock, client_config(pki))
        first = wait_for_token(sock)
        assert srv.wait(1) == ["sent"] and outcome["get"] == errno.EINVAL and outcome["eagain"] >= 1
        second = wait_for_token(sock)
        assert second != first and sock.getsockopt(L.QUIC_SOCKOPT_TOKEN, 256) == second


def test_invalid_regular_token_is_no_token(pki, retry_server) -> None:
    srv = retry_server(validate=True)
    with connect(srv.address, token=bytes([TokenKind.REGULAR]) + bytes(40)) as sock:
        quic_handshake(sock, client_config(pki))
        assert sock.backend.retries_followed == 1 and srv.stats.invalid_tokens == 0


# ---- admission: automatic Retry, caps, the unmatched ALPN ----------------------------------------


RAW_ALPN = "quichsd-sim"  # what tests.sim.driver's clients offer


def raw_initials(n: int) -> list[bytes]:
    """`n` client first flights (1200-byte Initials with a ClientHello offering RAW_ALPN),
    new CIDs each."""
    out = []
    for _ in range(n):
        agent = sim_client()
        agent.start(0.0)
        out += agent.send(0.0)
    return out


def test_half_open_flood_gets_stateless_retries_and_the_client_gets_in(pki, retry_server) -> None:
    limits = AdmissionLimits()
    srv = retry_server(validate=False, alpn=RAW_ALPN)
    endpoint = srv.sock.backend.endpoint
    flood = raw_initials(200)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    sent = threading.Event()

    def send_flood() -> None:
        for datagram in flood:
            raw.sendto(datagram, srv.address)
        sent.set()

    attacker = threading.Thread(target=send_flood)
    attacker.start()
    with connect(srv.address) as sock:
        quic_handshake(sock, client_config(pki, alpns=[RAW_ALPN]))
        attacker.join()
        # it shares the attacker's address: once the flood has a few half-open connections
        # from 127.0.0.1 it is asked to retry too, follows, and is let in as validated
    with endpoint.lock:  # state for at most the threshold's worth of the flood
        unvalidated, validated = endpoint.admission.counts("127.0.0.1")
        assert unvalidated <= limits.retry_threshold_per_source and len(endpoint.admission) <= unvalidated + 1
    # what the socket buffer did not drop got a stateless Retry
    assert srv.stats.retries_sent >= 40
    raw.close()


def test_client_sharing_a_flooders_address_is_retried_and_let_in(pki, retry_server) -> None:
    """The per-source threshold reached by half-open connections from 127.0.0.1: a client
    from there gets a Retry, follows it, and its validated connection is admitted (counted
    apart from the flood's); the flood's own Initials keep getting Retries meanwhile."""
    limits = AdmissionLimits()
    srv = retry_server(validate=False, alpn=RAW_ALPN)
    endpoint = srv.sock.backend.endpoint
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    for datagram in raw_initials(limits.retry_threshold_per_source):
        raw.sendto(datagram, srv.address)
    deadline = time.monotonic() + 5
    while True:  # the listener made (unvalidated) connections of all of them
        with endpoint.lock:
            unvalidated, _ = endpoint.admission.counts("127.0.0.1")
        if unvalidated >= limits.retry_threshold_per_source or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    assert unvalidated == limits.retry_threshold_per_source
    with connect(srv.address) as sock:
        quic_handshake(sock, client_config(pki, alpns=[RAW_ALPN]))
        assert sock.backend.retries_followed == 1 and srv.stats.retries_sent == 1
    for datagram in raw_initials(3):  # more of the flood: no state, a Retry each
        raw.sendto(datagram, srv.address)
    raw.settimeout(5)
    retries = 0
    while retries < 3:  # among the server flights still coming for the first ones
        datagram = raw.recv(2048)
        retries += (datagram[0] & 0xF0) == 0xF0  # a v1 Retry's first byte (RFC 9000 §17.2.5)
    assert srv.stats.retries_sent == 4
    with endpoint.lock:
        assert endpoint.admission.counts("127.0.0.1")[0] == limits.retry_threshold_per_source
    raw.close()


def test_over_the_hard_cap_initials_are_dropped(pki, retry_server) -> None:
    srv = retry_server(validate=False, alpn=RAW_ALPN,
                       limits=AdmissionLimits(retry_threshold=100, retry_threshold_per_source=100,
                                              max_half_open=3))
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for datagram in raw_initials(3):
        raw.sendto(datagram, srv.address)
    with connect(srv.address) as sock, pytest.raises(HandshakeError):
        quic_handshake(sock, client_config(pki, alpns=[RAW_ALPN], timeout=1))
    assert srv.stats.dropped_over_limit >= 1 and srv.stats.retries_sent == 0
    raw.close()


def test_unmatched_alpn_is_logged(pki, retry_server, caplog) -> None:
    """A rate-limited warning naming the ALPNs (folded to debug within its interval, so
    another test's warning moments ago may have taken this one's turn)."""
    srv = retry_server(validate=False)
    with (caplog.at_level("DEBUG", logger="quichsd.sock.sim.endpoint"), connect(srv.address) as sock,
          pytest.raises(HandshakeError)):
        quic_handshake(sock, client_config(pki, alpns=["smb", "nope"], timeout=0.5))
    assert srv.stats.no_listener >= 1
    assert any("smb, nope" in r.getMessage() and r.levelname in ("WARNING", "DEBUG") for r in caplog.records)


def test_rate_limited_log_folds_and_counts(caplog) -> None:
    import logging

    from quichsd.sock.sim.admission import RateLimitedLog

    logger = logging.getLogger("tests.ratelimited")
    now = [1000.0]
    limited = RateLimitedLog(logger, logging.WARNING, interval=10, clock=lambda: now[0])
    with caplog.at_level("DEBUG", logger="tests.ratelimited"):
        for i in range(3):
            limited("event %d", i)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "event 0"), ("DEBUG", "event 1"), ("DEBUG", "event 2")]
    caplog.clear()
    now[0] += 10
    with caplog.at_level("DEBUG", logger="tests.ratelimited"):
        limited("event %d", 3)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "event 3 (and 2 more since the last report)")]


# ---- quichsd server --retry ----------------------------------------------------------------------


def test_cli_server_retry_flag_sets_validate_peer_address(pki) -> None:
    import io

    from quichsd.cli import build_parser
    from quichsd.echo import ServerOptions, serve

    args = build_parser().parse_args(["server", "--listen", "127.0.0.1:0", "--alpn", "h3", "--retry"])
    assert args.retry
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    opts = ServerOptions(f"127.0.0.1:{port}", "h3", pki.cert_file, pki.key_file, backend="sim", retry=True)
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve, args=(opts, io.StringIO(), ready, stop), daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        with connect(("127.0.0.1", port)) as sock:
            quic_handshake(sock, client_config(pki))
            assert sock.backend.retries_followed == 1
    finally:
        stop.set()
        thread.join(5)
