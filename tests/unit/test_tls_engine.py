"""Our client against our server in memory: every mode the engine supports."""
from __future__ import annotations

import os

import pytest

from quichsd.tls.certs import TrustStore
from quichsd.tls.client import ClientEngine, _static_hello
from quichsd.tls.config import ClientAuth, ClientHelloInfo, Credentials, ExternalPsk, ServerChoice, TlsConfig
from quichsd.tls.constants import (
    AlertDescription,
    CipherSuite,
    CryptoLevel,
    Direction,
    ExtensionType,
    NamedGroup,
    SignatureScheme,
)
from quichsd.tls.errors import TlsError
from quichsd.tls.events import (
    ClientHelloReceived,
    HandshakeComplete,
    InstallSecret,
    KeyLogLine,
    PeerTransportParameters,
    SendHandshake,
)
from quichsd.tls.extensions import decode_key_share_client
from quichsd.tls.keylog import KeyLogFile
from quichsd.tls.messages import decode_message
from quichsd.tls.server import ServerEngine
from quichsd.tls.session import SessionData
from tests.pki import leaf, make_ca
from tests.tls_pair import run_pair
from tests.tls_tamper import CLIENT_TP, SERVER_TP, T, client_cfg, server_cfg, trust

KERNEL_CIPHER = {
    CipherSuite.AES_128_GCM_SHA256: 51,
    CipherSuite.AES_256_GCM_SHA384: 52,
    CipherSuite.CHACHA20_POLY1305_SHA256: 54,
}


def assert_secrets_mirror(client, server) -> None:
    """What one side sends with, the other receives with, at every level."""
    cs, ss = client.secrets(), server.secrets()
    assert cs and set(cs) == {(lvl, 1 - d) for lvl, d in ss}
    for (level, direction), secret in cs.items():
        assert ss[(level, 1 - direction)] == secret


@pytest.mark.parametrize("suite", list(KERNEL_CIPHER))
@pytest.mark.parametrize("group", list(NamedGroup.__members__.values())[:0] or [
    NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1, NamedGroup.X25519MLKEM768])
def test_full_handshake_every_suite_and_group(suite, group) -> None:
    client, server = run_pair(client_cfg(cipher_suites=[suite], groups=[group]), server_cfg(), T)
    assert_secrets_mirror(client, server)
    for side in (client, server):
        done = side.complete
        assert done.cipher_suite == suite and done.group == group and done.alpn == b"h3"
        assert not done.resumed and not done.early_data_accepted
        for e in side.of(InstallSecret):
            assert e.cipher_type == KERNEL_CIPHER[suite]
            assert len(e.secret) == (48 if suite == CipherSuite.AES_256_GCM_SHA384 else 32)
    assert client.peer_params == SERVER_TP and server.peer_params == CLIENT_TP
    assert client.complete.peer_certificates[0].subject.rfc4514_string() == "CN=localhost"


@pytest.mark.parametrize(
    ("kind", "scheme"),
    [
        ("p256", SignatureScheme.ECDSA_SECP256R1_SHA256),
        ("p384", SignatureScheme.ECDSA_SECP384R1_SHA384),
        ("rsa", SignatureScheme.RSA_PSS_RSAE_SHA256),
        ("rsa", SignatureScheme.RSA_PSS_RSAE_SHA384),
        ("rsa", SignatureScheme.RSA_PSS_RSAE_SHA512),
        ("ed25519", SignatureScheme.ED25519),
    ],
)
def test_every_signature_scheme(kind, scheme) -> None:
    client, server = run_pair(client_cfg(signature_schemes=[scheme]), server_cfg(kind), T)
    assert client.complete.signature_scheme == scheme
    assert_secrets_mirror(client, server)


def _order(side) -> list[str]:
    out = []
    for e in side.events:
        if isinstance(e, SendHandshake):
            out.append(f"send {e.level.name}")
        elif isinstance(e, InstallSecret):
            out.append(f"{e.level.name} {e.direction.name}")
        elif isinstance(e, PeerTransportParameters):
            out.append("peer tp")
        elif isinstance(e, HandshakeComplete):
            out.append("complete")
        else:
            out.append(type(e).__name__)
    return out


def test_event_order_is_what_the_kernel_needs() -> None:
    """spec kernel-quic-abi §2.4: send key before receive key at each level; the peer's
    transport parameters before the second 1-RTT key; the server's ticket after APP RECV."""
    client, server = run_pair(client_cfg(), server_cfg(session_ticket_key=os.urandom(64)), T)
    assert _order(client) == [
        "send INITIAL",
        "HANDSHAKE SEND", "HANDSHAKE RECV",
        "peer tp",
        "APP SEND", "APP RECV", "send HANDSHAKE", "complete",
        "SessionTicketReceived",
    ]
    assert _order(server) == [
        "peer tp",
        "send INITIAL", "HANDSHAKE SEND", "HANDSHAKE RECV", "send HANDSHAKE", "APP SEND",
        "APP RECV", "send APP", "complete",
    ]


FINISHED_AT_HANDSHAKE = bytes([20, 0, 0, 32]) + bytes(32)


@pytest.mark.parametrize("group",
                         [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1,
                          NamedGroup.X25519MLKEM768])
@pytest.mark.parametrize("psk", [False, True])
def test_server_hello_first(group, psk) -> None:
    """TlsConfig.server_hello_first: with (EC)DHE, the ClientHello's events end with the
    ServerHello and continue_flight() gives the rest; nothing is taken in between. The
    hybrid group stays one step."""
    from tests.tls_tamper import psk_client_cfg, psk_server_cfg

    ccfg = psk_client_cfg(groups=[group]) if psk else client_cfg(groups=[group])
    scfg = (psk_server_cfg if psk else server_cfg)(server_hello_first=True)
    for take_a_message in (False, True):
        server = ServerEngine(scfg)
        first = server.receive(CryptoLevel.INITIAL, ClientEngine(ccfg).start(T)[0].data, T)
        if group == NamedGroup.X25519MLKEM768:
            assert not server.flight_pending and SendHandshake in map(type, first)
            return
        assert server.flight_pending
        assert [type(e) for e in first] == [PeerTransportParameters, SendHandshake]
        assert first[-1].level == CryptoLevel.INITIAL
        if take_a_message:
            with pytest.raises(TlsError, match="not expected in state FLIGHT_PENDING"):
                server.receive(CryptoLevel.HANDSHAKE, FINISHED_AT_HANDSHAKE, T)
            continue
        rest = server.continue_flight(T)
        assert not server.flight_pending
        flights = [(type(e), e.level) for e in rest if isinstance(e, SendHandshake)]
        assert flights == [(SendHandshake, CryptoLevel.HANDSHAKE)]
        with pytest.raises(RuntimeError):
            server.continue_flight(T)


@pytest.mark.parametrize("group", [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1])
@pytest.mark.parametrize("psk", [False, True])
def test_server_hello_first_completes_as_one_step(group, psk) -> None:
    from tests.tls_tamper import psk_client_cfg, psk_server_cfg

    make_c = (lambda **kw: psk_client_cfg(**kw)) if psk else client_cfg
    make_s = psk_server_cfg if psk else server_cfg
    key = os.urandom(64)
    one = run_pair(make_c(groups=[group]), make_s(session_ticket_key=key), T)
    two = run_pair(make_c(groups=[group]), make_s(session_ticket_key=key, server_hello_first=True), T)
    assert _order(two[1]) == _order(one[1]) and _order(two[0]) == _order(one[0])
    assert_secrets_mirror(*two)
    assert two[0].complete.group == group and two[1].complete.resumed is False


def test_server_hello_first_low_order_share_fails_after_the_server_hello() -> None:
    """An all-zero X25519 secret (RFC 8446 §7.4.2) is found when the rest of the flight is
    made: illegal_parameter, and the engine stays failed."""
    client = ClientEngine(client_cfg(groups=[NamedGroup.X25519]))
    hello = bytearray(client.start(T)[0].data)
    key_share = decode_message(bytes(hello)).extensions[ExtensionType.KEY_SHARE]
    ((group, public),) = decode_key_share_client(key_share)
    assert group == NamedGroup.X25519
    at = bytes(hello).index(public)
    hello[at:at + 32] = bytes(32)
    server = ServerEngine(server_cfg(server_hello_first=True))
    first = server.receive(CryptoLevel.INITIAL, bytes(hello), T)
    assert first[-1].level == CryptoLevel.INITIAL and server.flight_pending
    with pytest.raises(TlsError) as info:
        server.continue_flight(T)
    assert info.value.alert.name == "illegal_parameter"
    with pytest.raises(TlsError):
        server.receive(CryptoLevel.HANDSHAKE, FINISHED_AT_HANDSHAKE, T)


@pytest.mark.parametrize("group",
                         [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1,
                          NamedGroup.X25519MLKEM768])
def test_hello_retry_request_to_every_group(group) -> None:
    """The client's one share is for a group the server lacks; the server asks for `group`."""
    first = NamedGroup.SECP384R1 if group != NamedGroup.SECP384R1 else NamedGroup.X25519
    client, server = run_pair(client_cfg(groups=[first, group]), server_cfg(groups=[group]), T)
    initial_sends = [e for e in client.of(SendHandshake) if e.level == CryptoLevel.INITIAL]
    assert len(initial_sends) == 2  # ClientHello, then the retried ClientHello
    assert client.complete.group == server.complete.group == group
    assert_secrets_mirror(client, server)


def test_hello_retry_with_resumption_keeps_the_psk_and_drops_0rtt() -> None:
    scfg = server_cfg(session_ticket_key=os.urandom(64), enable_early_data=True,
                      groups=[NamedGroup.X25519, NamedGroup.SECP256R1])
    first, _ = run_pair(client_cfg(), scfg, T)
    scfg_retry = server_cfg(session_ticket_key=scfg.session_ticket_key, enable_early_data=True,
                            groups=[NamedGroup.SECP256R1])
    client, server = run_pair(client_cfg(session=first.session, enable_early_data=True), scfg_retry, T + 1)
    assert client.complete.resumed and server.complete.resumed
    assert not client.complete.early_data_accepted and not server.complete.early_data_accepted
    assert (CryptoLevel.EARLY, Direction.RECV) not in server.secrets()


def test_resumption_and_0rtt_accepted() -> None:
    scfg = server_cfg(session_ticket_key=os.urandom(64), enable_early_data=True)
    first, _ = run_pair(client_cfg(), scfg, T)
    session = first.session
    assert session is not None and session.max_early_data == 0xFFFFFFFF
    # The session survives a round trip through its storage format.
    session = SessionData.decode(session.encode())
    client, server = run_pair(client_cfg(session=session, enable_early_data=True), scfg, T + 5)
    assert client.complete.resumed and server.complete.resumed
    assert client.complete.early_data_accepted and server.complete.early_data_accepted
    early_send, early_recv = (CryptoLevel.EARLY, Direction.SEND), (CryptoLevel.EARLY, Direction.RECV)
    assert client.secrets()[early_send] == server.secrets()[early_recv]
    assert_secrets_mirror(client, server)
    # No certificate on a resumed handshake.
    assert client.complete.peer_certificates == ()


def test_0rtt_rejected_when_the_server_does_not_allow_it() -> None:
    key = os.urandom(64)
    first, _ = run_pair(client_cfg(), server_cfg(session_ticket_key=key, enable_early_data=True), T)
    client, server = run_pair(client_cfg(session=first.session, enable_early_data=True),
                              server_cfg(session_ticket_key=key, enable_early_data=False), T + 1)
    assert client.complete.resumed and not client.complete.early_data_accepted
    assert (CryptoLevel.EARLY, Direction.SEND) in client.secrets()  # it tried
    assert (CryptoLevel.EARLY, Direction.RECV) not in server.secrets()


def test_0rtt_is_single_use_per_ticket() -> None:
    scfg = server_cfg(session_ticket_key=os.urandom(64), enable_early_data=True)
    first, _ = run_pair(client_cfg(), scfg, T)
    a, _ = run_pair(client_cfg(session=first.session, enable_early_data=True), scfg, T + 1)
    b, _ = run_pair(client_cfg(session=first.session, enable_early_data=True), scfg, T + 2)
    assert a.complete.early_data_accepted
    assert b.complete.resumed and not b.complete.early_data_accepted


def test_0rtt_refused_when_ticket_age_is_off() -> None:
    scfg = server_cfg(session_ticket_key=os.urandom(64), enable_early_data=True)
    first, _ = run_pair(client_cfg(), scfg, T)
    session = first.session
    session.received_at -= 60  # the client believes the ticket is a minute older
    client, _ = run_pair(client_cfg(session=session, enable_early_data=True), scfg, T + 1)
    assert client.complete.resumed and not client.complete.early_data_accepted


def test_ticket_from_another_key_falls_back_to_full_handshake() -> None:
    first, _ = run_pair(client_cfg(), server_cfg(session_ticket_key=os.urandom(64)), T)
    client, server = run_pair(client_cfg(session=first.session),
                              server_cfg(session_ticket_key=os.urandom(64)), T + 1)
    assert not client.complete.resumed and client.complete.peer_certificates


def test_expired_session_is_not_offered() -> None:
    scfg = server_cfg(session_ticket_key=os.urandom(64), ticket_lifetime=10)
    first, _ = run_pair(client_cfg(), scfg, T)
    client, _ = run_pair(client_cfg(session=first.session), scfg, T + 11)
    assert not client.complete.resumed


def test_client_certificate_required() -> None:
    ccert, ckey = leaf("ed25519", "client")
    client, server = run_pair(
        client_cfg(credentials=Credentials([ccert], ckey)),
        server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust()), T,
    )
    assert server.complete.peer_certificates[0].subject.rfc4514_string() == "CN=client"
    assert server.complete.signature_scheme == SignatureScheme.ED25519
    assert_secrets_mirror(client, server)


def test_client_certificate_optional_and_absent() -> None:
    client, server = run_pair(client_cfg(), server_cfg(client_auth=ClientAuth.OPTIONAL, trust=trust()), T)
    assert server.complete.peer_certificates == ()
    assert_secrets_mirror(client, server)


def test_client_identity_survives_resumption() -> None:
    ccert, ckey = leaf("p256", "client")
    scfg = server_cfg(client_auth=ClientAuth.REQUIRED, trust=trust(), session_ticket_key=os.urandom(64))
    first, _ = run_pair(client_cfg(credentials=Credentials([ccert], ckey)), scfg, T)
    _, server = run_pair(client_cfg(session=first.session), scfg, T + 1)
    assert server.complete.resumed
    assert server.complete.peer_certificates[0].subject.rfc4514_string() == "CN=client"


def test_external_psk() -> None:
    psk = ExternalPsk(b"nvme-host-1", os.urandom(32))
    other = ExternalPsk(b"someone-else", os.urandom(32))
    client, server = run_pair(
        TlsConfig(alpn_protocols=[b"smb"], psks=[psk], transport_parameters=CLIENT_TP),
        TlsConfig(alpn_protocols=[b"smb"], psks=[other, psk], transport_parameters=SERVER_TP), T,
    )
    assert client.complete.psk_identity == server.complete.psk_identity == b"nvme-host-1"
    assert client.complete.peer_certificates == ()
    assert_secrets_mirror(client, server)


def test_external_psk_sha384() -> None:
    psk = ExternalPsk(b"id", os.urandom(48), hash_name="sha384")
    client, server = run_pair(
        TlsConfig(alpn_protocols=[b"smb"], psks=[psk]), TlsConfig(alpn_protocols=[b"smb"], psks=[psk]), T,
    )
    assert client.complete.cipher_suite == CipherSuite.AES_256_GCM_SHA384


def test_alpn_follows_client_preference() -> None:
    client, server = run_pair(client_cfg(alpn_protocols=[b"smb", b"h3"]),
                              server_cfg(alpn_protocols=[b"h3", b"smb"]), T)
    assert client.complete.alpn == server.complete.alpn == b"smb"


def test_unverified_mode_is_an_explicit_choice() -> None:
    other = make_ca("another CA")
    from tests.pki import new_key

    key = new_key("p256")
    cert = other.issue("localhost", key)
    scfg = TlsConfig(alpn_protocols=[b"h3"], credentials=Credentials([cert], key))
    with pytest.raises(TlsError) as err:
        run_pair(client_cfg(), scfg, T)
    assert err.value.alert.name == "unknown_ca"
    client, _ = run_pair(client_cfg(verify_peer=False), scfg, T)
    assert client.complete.alpn == b"h3"


def test_verification_needs_a_name() -> None:
    with pytest.raises(ValueError, match="server_name"):
        ClientEngine(TlsConfig(alpn_protocols=[b"h3"]))


def test_server_picks_credentials_after_client_hello() -> None:
    """Per-ALPN credentials: the hook sees SNI and ALPN before the server answers."""
    smb_cert, smb_key = leaf("ed25519", "smb.example")
    seen: list[ClientHelloInfo] = []

    def hook(info: ClientHelloInfo) -> ServerChoice | None:
        seen.append(info)
        if b"smb" in info.alpn_protocols:
            return ServerChoice(credentials=Credentials([smb_cert], smb_key), alpn_protocols=[b"smb"])
        return None

    client, server = run_pair(
        client_cfg(alpn_protocols=[b"smb"], verify_peer=False),
        server_cfg(alpn_protocols=[b"h3"], pause_at_client_hello=True), T, choose=hook,
    )
    assert seen[0].server_name == "localhost" and seen[0].transport_parameters == CLIENT_TP
    assert client.complete.peer_certificates[0].subject.rfc4514_string() == "CN=smb.example"


def test_keylog_file(tmp_path) -> None:
    path = tmp_path / "keys.log"
    client, server = run_pair(client_cfg(keylog=True), server_cfg(keylog=True), T)
    # The engine does no I/O: the lines are events, which the driver writes (as here).
    log = KeyLogFile(path)
    for line in client.of(KeyLogLine):
        log.log(line.label, line.client_random, line.secret)
    log.close()
    lines = path.read_text().splitlines()
    labels = [line.split()[0] for line in lines]
    assert labels == [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "EXPORTER_SECRET", "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0",
    ]
    secrets = client.secrets()
    assert lines[0].split()[2] == secrets[(CryptoLevel.HANDSHAKE, Direction.SEND)].hex()
    assert os.stat(path).st_mode & 0o777 == 0o600
    # The server logs the same secrets (its handshake keys in its own send-first order).
    server_lines = {(e.label, e.secret) for e in server.of(KeyLogLine)}
    assert server_lines == {(e.label, e.secret) for e in client.of(KeyLogLine)}
    # Without keylog=True, no line is made.
    plain, _ = run_pair(client_cfg(), server_cfg(), T)
    assert plain.of(KeyLogLine) == []


def test_secrets_stay_out_of_reprs() -> None:
    client, server = run_pair(client_cfg(), server_cfg(session_ticket_key=os.urandom(64)), T)
    for side in (client, server):
        text = repr(side.events)
        for secret in side.secrets().values():
            assert secret.hex() not in text and repr(secret) not in text
    assert repr(client.session.psk) not in repr(client.session)


def test_chunked_delivery_completes() -> None:
    """The kernel hands CRYPTO data over in arbitrary chunks (spec §2.2)."""
    client = ClientEngine(client_cfg())
    from quichsd.tls.server import ServerEngine

    server = ServerEngine(server_cfg())
    pending = [("s", e) for e in client.start(T)]
    done = 0
    while pending:
        to, event = pending.pop(0)
        if not isinstance(event, SendHandshake):
            done += isinstance(event, HandshakeComplete)
            continue
        target = server if to == "s" else client
        for i in range(len(event.data)):
            for out in target.receive(event.level, event.data[i : i + 1], T):
                pending.append(("c" if to == "s" else "s", out))
    assert done == 2


def test_a_reused_certificate_is_verified_again_in_every_handshake() -> None:
    """Parsed peer certificates are kept per DER encoding; verification is not: the same
    certificate, already seen and accepted, fails under another trust store, and a
    CertificateVerify made with another key fails, each time."""
    from quichsd.tls.constants import AlertDescription

    server = server_cfg()
    run_pair(client_cfg(), server, T)  # accepted, and its parse is now kept
    other_ca = TrustStore.from_certificates([make_ca("another CA").cert])
    for _ in range(2):
        with pytest.raises(TlsError) as info:
            run_pair(client_cfg(trust=other_ca), server, T)
        assert info.value.alert == AlertDescription.unknown_ca
    cert = server.credentials.chain[0]
    from cryptography.hazmat.primitives.asymmetric import ec

    wrong_key = ec.generate_private_key(ec.SECP256R1())
    for _ in range(2):
        with pytest.raises(TlsError) as info:
            run_pair(client_cfg(), server_cfg(credentials=Credentials([cert], wrong_key)), T)
        assert info.value.alert == AlertDescription.decrypt_error
    run_pair(client_cfg(), server, T)


def test_resumption_master_secret_is_derived_only_when_needed() -> None:
    """Without a ticket neither side derives it; a ticket on request still resumes."""
    client, server = run_pair(client_cfg(), server_cfg(), T)
    for side in (client, server):
        assert side.engine._resumption_secret == b"" and side.engine._resumption_hash
    ticket_cfg = server_cfg(session_ticket_key=bytes(64), send_session_ticket=False)
    client, server = run_pair(client_cfg(), ticket_cfg, T)
    (nst,) = server.engine.issue_session_ticket(T)
    events = client.engine.receive(nst.level, nst.data, T)
    session = events[0].session
    resumed, _ = run_pair(client_cfg(session=session), ticket_cfg, T + 1)
    assert resumed.complete.resumed


def test_configs_built_per_handshake_share_only_equal_hello_encodings() -> None:
    """The driver builds a TlsConfig per handshake; the static ClientHello parts are
    shared between equal settings and never leak into a configuration that differs."""
    first, same = _static_hello(client_cfg()), _static_hello(client_cfg())
    assert first is same
    other = client_cfg(server_name="other.example", alpn_protocols=[b"smb"])
    assert _static_hello(other) is not first
    (hello,) = ClientEngine(other).start(T)
    exts = decode_message(hello.data).extensions
    assert exts[ExtensionType.SERVER_NAME].endswith(b"other.example")
    assert exts[ExtensionType.ALPN] == b"\x00\x04\x03smb"


def test_single_use_tickets_one_first_use_among_racing_threads() -> None:
    """RFC 8446 §8.1 across a worker's handshake threads: of many threads presenting the
    same ticket at once, exactly one is told it is the first use."""
    import threading

    from quichsd.tls.session import SingleUseTickets

    for _ in range(50):
        record = SingleUseTickets()
        start = threading.Barrier(8)
        answers: list[bool] = []

        def present(start: threading.Barrier, answers: list[bool], record: SingleUseTickets) -> None:
            start.wait()
            answers.append(record.first_use(b"nonce", expires_at=2e9, now=1e9))

        threads = [threading.Thread(target=present, args=(start, answers, record)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers) == [False] * 7 + [True]


def test_configs_with_one_ticket_key_share_one_replay_record() -> None:
    """RFC 8446 §8.1 across configurations built per connection: the anti-replay record
    belongs to the ticket key, not to one TlsConfig; an explicit record is kept."""
    from quichsd.tls.session import SingleUseTickets

    key, other = os.urandom(64), os.urandom(64)
    first = TlsConfig(alpn_protocols=[b"h3"], session_ticket_key=key)
    second = TlsConfig(alpn_protocols=[b"h3"], session_ticket_key=bytearray(key))
    assert first.replay_guard is second.replay_guard
    assert first.ticket_sealer is second.ticket_sealer
    assert TlsConfig(alpn_protocols=[b"h3"], session_ticket_key=other).replay_guard is not first.replay_guard
    own = SingleUseTickets()
    assert TlsConfig(alpn_protocols=[b"h3"], session_ticket_key=key, replay_guard=own).replay_guard is own
    assert first.replay_guard.first_use(b"n", expires_at=2e9, now=1e9)
    assert not second.replay_guard.first_use(b"n", expires_at=2e9, now=1e9)


def test_server_pauses_at_the_client_hello_until_choose() -> None:
    """pause_at_client_hello: receive() ends with ClientHelloReceived and answers nothing;
    choose() gives the answer. The client's transport parameters come in that event only."""
    client = ClientEngine(client_cfg())
    server = ServerEngine(server_cfg(pause_at_client_hello=True, transport_parameters=None))
    (hello,) = client.start(T)
    paused = server.receive(hello.level, hello.data, T)
    assert [type(e) for e in paused] == [ClientHelloReceived]
    info = paused[0].info
    assert (info.server_name, info.alpn_protocols, info.transport_parameters) == ("localhost", (b"h3",),
                                                                                  CLIENT_TP)
    answer = server.choose(ServerChoice(transport_parameters=SERVER_TP), T)
    flights = [(type(e), e.level) for e in answer if isinstance(e, SendHandshake)]
    assert flights[0] == (SendHandshake, CryptoLevel.INITIAL)
    with pytest.raises(RuntimeError):  # one choice per pause
        server.choose(None, T)


def test_paused_handshake_completes_with_the_choice() -> None:
    client, server = run_pair(client_cfg(), server_cfg(pause_at_client_hello=True, transport_parameters=None),
                              T,
                              choose=lambda info: ServerChoice(transport_parameters=SERVER_TP))
    assert client.complete and server.complete
    assert client.peer_params == SERVER_TP  # the choice's parameters reached the client
    assert server.of(PeerTransportParameters) == []  # the server had them in the pause event
    assert [e.info.transport_parameters for e in server.of(ClientHelloReceived)] == [CLIENT_TP]


def test_choose_without_a_paused_hello_is_refused() -> None:
    server = ServerEngine(server_cfg())
    with pytest.raises(RuntimeError):
        server.choose(None, T)


def test_a_message_while_paused_is_unexpected() -> None:
    client = ClientEngine(client_cfg())
    server = ServerEngine(server_cfg(pause_at_client_hello=True))
    (hello,) = client.start(T)
    server.receive(hello.level, hello.data, T)
    with pytest.raises(TlsError) as info:
        server.receive(hello.level, hello.data, T)  # a second ClientHello before the answer
    assert info.value.alert == AlertDescription.unexpected_message
