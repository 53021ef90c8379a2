"""Interop of our TLS engine with aioquic's TLS layer (aioquic.tls.Context), in memory.

Both directions: our ClientEngine against aioquic's server Context, and aioquic's client
Context against our ServerEngine. Every handshake checks that the traffic secrets the two
sides derive agree (send on one side == receive on the other, aioquic epochs mapped to our
levels), that ALPN and transport parameters arrive, and what each side reports at the end.
Certificates are verified for real: aioquic against the test CA (cadata), ours against a
TrustStore of the same CA with server_name 'localhost'.
"""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from quichsd.tls.certs import TrustStore
from quichsd.tls.config import ClientAuth, Credentials
from quichsd.tls.constants import (
    AlertDescription,
    CipherSuite,
    CryptoLevel,
    Direction,
    NamedGroup,
    SignatureScheme,
)
from quichsd.tls.errors import TlsError
from quichsd.tls.events import InstallSecret
from quichsd.tls.suites import SUITES
from tests.pki import make_ca
from tests.tls_pair import Side

pytest.importorskip(
    "aioquic.tls", reason="aioquic (the test extra, aioquic==1.7.2) is needed for the TLS interop tests"
)

# these two import aioquic: only once importorskip has found it
from aioquic import tls as aiotls  # noqa: E402

from tests.aioquic_pair import (  # noqa: E402
    ALPN,
    CLIENT_PARAMS,
    SERVER_PARAMS,
    AioSide,
    Clock,
    TicketStore,
    aio_client,
    aio_server,
    ca_pem,
    chained_leaf,
    credentials,
    interop_leaf,
    our_client_config,
    our_server_config,
    run_aioquic_client_vs_ours,
    run_ours_vs_aioquic_server,
)

pytestmark = pytest.mark.interop

QUIC_MAX_EARLY_DATA = 0xFFFFFFFF
TLS13 = 0x0304

SUITE_IDS = {
    CipherSuite.AES_128_GCM_SHA256: "aes128gcm",
    CipherSuite.AES_256_GCM_SHA384: "aes256gcm",
    CipherSuite.CHACHA20_POLY1305_SHA256: "chacha20",
}
ALL_SUITES = pytest.mark.parametrize("suite", list(SUITE_IDS), ids=list(SUITE_IDS.values()))
# Every group both implementations have. aioquic 1.7.2 also has X448 (we do not) and has
# no X25519MLKEM768 (nor any ML-KEM group), so the hybrid group cannot be exercised here.
COMMON_GROUPS = pytest.mark.parametrize(
    "group", [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1],
    ids=["x25519", "secp256r1", "secp384r1"],
)
CERT_KINDS = pytest.mark.parametrize(
    "kind,scheme",
    [
        ("p256", SignatureScheme.ECDSA_SECP256R1_SHA256),
        ("rsa", SignatureScheme.RSA_PSS_RSAE_SHA256),
        ("ed25519", SignatureScheme.ED25519),
        ("p384", SignatureScheme.ECDSA_SECP384R1_SHA384),
    ],
    ids=["ecdsa-p256", "rsa-pss", "ed25519", "ecdsa-p384"],
)

_HS, _APP, _EARLY = CryptoLevel.HANDSHAKE, CryptoLevel.APP, CryptoLevel.EARLY
_SEND, _RECV = Direction.SEND, Direction.RECV


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """Pin aioquic's clock to the test PKI's NOW; our engine gets clock.now."""
    c = Clock()
    monkeypatch.setattr(aiotls, "utcnow", c.utcnow)
    return c


def test_aioquic_has_no_mlkem_group():
    """Why X25519MLKEM768 is missing from the group matrix: aioquic lacks it."""
    assert int(NamedGroup.X25519MLKEM768) not in {int(g) for g in aiotls.Group}
    assert {int(NamedGroup.X25519), int(NamedGroup.SECP256R1)} <= {int(g) for g in aiotls.Group}


# -- shared checks ----------------------------------------------------------------------


def _expected_keys(is_client: bool, early: bool) -> set[tuple[int, int]]:
    keys = {(_HS, _SEND), (_HS, _RECV), (_APP, _SEND), (_APP, _RECV)}
    if early:
        keys.add((_EARLY, _SEND if is_client else _RECV))
    return {(int(level), int(direction)) for level, direction in keys}


def check_secrets(client: dict, server: dict, suite: int, *, early_sent: bool, early_accepted: bool) -> None:
    """Client and server secrets: the expected set on each side, each send secret equal to
    the peer's receive secret at the same level, of the suite's hash length."""
    assert set(client) == _expected_keys(True, early_sent)
    assert set(server) == _expected_keys(False, early_accepted)
    hash_len = SUITES[suite].hash_len
    for (level, direction), secret in client.items():
        assert len(secret) == hash_len
        if level == _EARLY and not early_accepted:
            continue
        assert server[(level, 1 - direction)] == secret, \
            f"secret mismatch at level {level}, client dir {direction}"
    assert len(set(client.values())) == len(client), "distinct traffic secrets expected"


def check_our_cipher(side: Side, suite: int) -> None:
    kernel = SUITES[suite].kernel_cipher
    assert {e.cipher_type for e in side.of(InstallSecret)} == {kernel}


def check_pair(ours: Side, aio: AioSide, *, ours_is_client: bool, suite: int, resumed: bool = False,
               early_sent: bool = False, early_accepted: bool = False, group: int | None = None) -> None:
    assert aio.connected, f"aioquic stopped in {aio.ctx.state}"
    assert ours.engine.handshake_complete and ours.engine.failed is None
    done = ours.complete
    assert done.version == TLS13
    assert done.cipher_suite == suite
    assert done.alpn == ALPN.encode()
    assert done.resumed is resumed
    assert done.early_data_accepted is early_accepted
    assert done.psk_identity is None
    if group is not None:
        assert done.group == group
    # aioquic's view of the same handshake
    assert aio.ctx.key_schedule.cipher_suite == suite
    assert aio.ctx.alpn_negotiated == ALPN
    assert aio.ctx.session_resumed is resumed
    assert aio.ctx.early_data_accepted is early_accepted
    assert aio.suites() == {suite}
    check_our_cipher(ours, suite)
    # transport parameters, both ways, byte for byte
    if ours_is_client:
        assert ours.peer_params == SERVER_PARAMS
        assert aio.peer_params == CLIENT_PARAMS
        check_secrets(ours.secrets(), aio.secrets(), suite, early_sent=early_sent,
                      early_accepted=early_accepted)
    else:
        assert ours.peer_params == CLIENT_PARAMS
        assert aio.peer_params == SERVER_PARAMS
        assert done.server_name == "localhost"
        check_secrets(aio.secrets(), ours.secrets(), suite, early_sent=early_sent,
                      early_accepted=early_accepted)


def der(cert) -> bytes:
    return cert.public_bytes(Encoding.DER)


# ======================================================================================
# our ClientEngine -> aioquic server
# ======================================================================================


class TestOurClientAioquicServer:
    @ALL_SUITES
    def test_cipher_suite(self, clock, suite):
        client, server = run_ours_vs_aioquic_server(
            our_client_config(), aio_server(cipher_suites=[aiotls.CipherSuite(suite)]), clock.now
        )
        check_pair(client, server, ours_is_client=True, suite=suite)

    @ALL_SUITES
    def test_cipher_suite_we_offer_only_one(self, clock, suite):
        client, server = run_ours_vs_aioquic_server(
            our_client_config(cipher_suites=[suite]), aio_server(), clock.now
        )
        check_pair(client, server, ours_is_client=True, suite=suite)

    def test_defaults_follow_aioquic_preference(self, clock):
        """aioquic's server prefers AES-256-GCM; we offer all three."""
        client, server = run_ours_vs_aioquic_server(our_client_config(), aio_server(), clock.now)
        check_pair(client, server, ours_is_client=True, suite=CipherSuite.AES_256_GCM_SHA384,
                   group=NamedGroup.X25519)

    @COMMON_GROUPS
    def test_group(self, clock, group):
        client, server = run_ours_vs_aioquic_server(our_client_config(groups=[group]), aio_server(),
                                                    clock.now)
        check_pair(client, server, ours_is_client=True, suite=CipherSuite.AES_256_GCM_SHA384, group=group)

    @CERT_KINDS
    def test_server_certificate(self, clock, kind, scheme):
        client, server = run_ours_vs_aioquic_server(our_client_config(), aio_server(kind), clock.now)
        check_pair(client, server, ours_is_client=True, suite=CipherSuite.AES_256_GCM_SHA384)
        done = client.complete
        assert done.signature_scheme == scheme
        assert [der(c) for c in done.peer_certificates] == [der(interop_leaf(kind)[0])]

    def test_chain_with_intermediate(self, clock):
        leaf, inter, key = chained_leaf()
        ctx = aio_server()
        ctx.certificate, ctx.certificate_chain, ctx.certificate_private_key = leaf, [inter], key
        client, server = run_ours_vs_aioquic_server(our_client_config(), ctx, clock.now)
        check_pair(client, server, ours_is_client=True, suite=CipherSuite.AES_256_GCM_SHA384)
        assert [der(c) for c in client.complete.peer_certificates] == [der(leaf), der(inter)]

    @pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
    def test_ip_address_server_name(self, clock, address):
        """No SNI for an IP literal; the certificate's IP SAN is what we verify."""
        client, server = run_ours_vs_aioquic_server(our_client_config(server_name=address), aio_server(),
                                                    clock.now)
        check_pair(client, server, ours_is_client=True, suite=CipherSuite.AES_256_GCM_SHA384)

    @pytest.mark.parametrize("chunk", [1, 7, 100])
    def test_fragmented_delivery(self, clock, chunk):
        """Every flight delivered in small pieces, both ways (CRYPTO frames split anywhere)."""
        client, server = run_ours_vs_aioquic_server(
            our_client_config(credentials=credentials("rsa", "our client")),
            aio_server("rsa", request_client_certificate=True), clock.now, chunk=chunk,
        )
        check_pair(client, server, ours_is_client=True, suite=CipherSuite.AES_256_GCM_SHA384)

    def test_unknown_ca_is_rejected(self, clock):
        other = TrustStore.from_certificates([make_ca("another CA").cert])
        with pytest.raises(TlsError) as err:
            run_ours_vs_aioquic_server(our_client_config(trust=other), aio_server(), clock.now)
        assert err.value.alert == AlertDescription.unknown_ca

    def test_wrong_server_name_is_rejected(self, clock):
        with pytest.raises(TlsError) as err:
            run_ours_vs_aioquic_server(our_client_config(server_name="example.org"), aio_server(), clock.now)
        assert err.value.alert == AlertDescription.bad_certificate

    # -- resumption and 0-RTT ---------------------------------------------------------------

    def _ticket(self, clock, store, suite, **server_kw):
        client, server = run_ours_vs_aioquic_server(
            our_client_config(),
            aio_server(store=store, cipher_suites=[aiotls.CipherSuite(suite)], **server_kw),
            clock.now,
        )
        check_pair(client, server, ours_is_client=True, suite=suite)
        assert len(server.tickets) == 1 and store.tickets
        session = client.session
        assert session is not None, "no SessionTicketReceived from aioquic's NewSessionTicket"
        assert session.ticket == server.tickets[0].ticket
        assert session.cipher_suite == suite and session.alpn == ALPN.encode()
        assert session.transport_parameters == SERVER_PARAMS
        return session

    @ALL_SUITES
    def test_resumption_with_aioquic_ticket(self, clock, suite):
        store = TicketStore()
        session = self._ticket(clock, store, suite)
        assert session.max_early_data == 0
        clock.advance(30)
        client, server = run_ours_vs_aioquic_server(
            our_client_config(session=session, enable_early_data=True),
            aio_server(store=store, cipher_suites=[aiotls.CipherSuite(suite)]), clock.now,
        )
        check_pair(client, server, ours_is_client=True, suite=suite, resumed=True)
        assert client.complete.peer_certificates == ()
        assert client.complete.signature_scheme is None

    @ALL_SUITES
    def test_early_data_accepted(self, clock, suite):
        store = TicketStore()
        session = self._ticket(clock, store, suite, max_early_data=QUIC_MAX_EARLY_DATA)
        assert session.max_early_data == QUIC_MAX_EARLY_DATA
        clock.advance(5)
        client, server = run_ours_vs_aioquic_server(
            our_client_config(session=session, enable_early_data=True),
            aio_server(store=store, cipher_suites=[aiotls.CipherSuite(suite)],
                       max_early_data=QUIC_MAX_EARLY_DATA),
            clock.now,
        )
        check_pair(client, server, ours_is_client=True, suite=suite, resumed=True,
                   early_sent=True, early_accepted=True)

    def test_early_data_not_offered_without_enable(self, clock):
        store = TicketStore()
        suite = CipherSuite.AES_128_GCM_SHA256
        session = self._ticket(clock, store, suite, max_early_data=QUIC_MAX_EARLY_DATA)
        client, server = run_ours_vs_aioquic_server(
            our_client_config(session=session),
            aio_server(store=store, cipher_suites=[aiotls.CipherSuite(suite)],
                       max_early_data=QUIC_MAX_EARLY_DATA),
            clock.now,
        )
        check_pair(client, server, ours_is_client=True, suite=suite, resumed=True)

    def test_early_data_rejected_by_server_without_the_ticket(self, clock):
        """aioquic accepts 0-RTT whenever it accepts the PSK, so a rejection means a
        server that no longer knows the ticket (e.g. restarted): a full handshake."""
        suite = CipherSuite.CHACHA20_POLY1305_SHA256
        session = self._ticket(clock, TicketStore(), suite, max_early_data=QUIC_MAX_EARLY_DATA)
        client, server = run_ours_vs_aioquic_server(
            our_client_config(session=session, enable_early_data=True),
            aio_server(store=TicketStore(), cipher_suites=[aiotls.CipherSuite(suite)]), clock.now,
        )
        check_pair(client, server, ours_is_client=True, suite=suite, resumed=False,
                   early_sent=True, early_accepted=False)
        assert client.complete.peer_certificates  # authenticated by certificate again

    # -- PSK key exchange modes (RFC 8446 §4.2.9) ---------------------------------------
    # aioquic 1.7.2 has no psk_ke: its server negotiates the mode but always answers with
    # a key_share and does (EC)DHE, and its client insists on a key_share.

    def test_aioquic_picks_psk_dhe_ke_from_our_two_modes(self, clock):
        suite = CipherSuite.AES_128_GCM_SHA256
        store = TicketStore()
        session = self._ticket(clock, store, suite)
        client, server = run_ours_vs_aioquic_server(
            our_client_config(session=session),
            aio_server(store=store, cipher_suites=[aiotls.CipherSuite(suite)]),
            clock.now,
        )
        check_pair(client, server, ours_is_client=True, suite=suite, resumed=True)
        assert client.complete.group is not None

    def test_psk_ke_only_client_refuses_a_key_share_with_its_psk(self, clock):
        """aioquic told to take psk_ke accepts our psk_ke-only offer but still sends a
        key_share: a mode we did not offer, so illegal_parameter (RFC 8446 §4.2.9)."""
        suite = CipherSuite.AES_128_GCM_SHA256
        store = TicketStore()

        def server():
            ctx = aio_server(store=store, cipher_suites=[aiotls.CipherSuite(suite)])
            ctx._psk_key_exchange_modes = [aiotls.PskKeyExchangeMode.PSK_KE]
            return ctx

        client, _ = run_ours_vs_aioquic_server(our_client_config(psk_modes=[0]), server(), clock.now)
        session = client.session
        assert session is not None
        with pytest.raises(TlsError) as err:
            run_ours_vs_aioquic_server(our_client_config(psk_modes=[0], session=session), server(), clock.now)
        assert err.value.alert == AlertDescription.illegal_parameter

    def test_psk_ke_only_client_gets_a_full_handshake_from_aioquic(self, clock):
        """aioquic's default takes psk_dhe_ke only: no mode in common, no PSK."""
        suite = CipherSuite.AES_128_GCM_SHA256
        store = TicketStore()
        session = self._ticket(clock, store, suite)
        client, server = run_ours_vs_aioquic_server(
            our_client_config(psk_modes=[0], session=session),
            aio_server(store=store, cipher_suites=[aiotls.CipherSuite(suite)]), clock.now,
        )
        check_pair(client, server, ours_is_client=True, suite=suite, resumed=False)
        assert client.complete.peer_certificates

    def test_ticket_with_other_hash_is_not_offered(self, clock):
        """A SHA-256 ticket cannot resume a SHA-384-only connection: we do not offer it."""
        session = self._ticket(clock, TicketStore(), CipherSuite.AES_128_GCM_SHA256)
        store = TicketStore()
        client, server = run_ours_vs_aioquic_server(
            our_client_config(session=session, cipher_suites=[CipherSuite.AES_256_GCM_SHA384]),
            aio_server(store=store), clock.now,
        )
        check_pair(client, server, ours_is_client=True, suite=CipherSuite.AES_256_GCM_SHA384)

    # -- client certificates ----------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["p256", "rsa", "ed25519"])
    def test_client_certificate(self, clock, kind):
        client, server = run_ours_vs_aioquic_server(
            our_client_config(credentials=credentials(kind, "our client")),
            aio_server(request_client_certificate=True), clock.now,
        )
        check_pair(client, server, ours_is_client=True, suite=CipherSuite.AES_256_GCM_SHA384)
        # aioquic checked our CertificateVerify; it does not verify client chains itself,
        # so verify the certificate it received with its own verifier and the test CA.
        received = server.ctx._peer_certificate
        assert der(received) == der(interop_leaf(kind, "our client")[0])
        aiotls.verify_certificate(certificate=received, chain=server.ctx._peer_certificate_chain,
                                  cadata=ca_pem())

    def test_client_without_certificate(self, clock):
        client, server = run_ours_vs_aioquic_server(
            our_client_config(), aio_server(request_client_certificate=True), clock.now
        )
        check_pair(client, server, ours_is_client=True, suite=CipherSuite.AES_256_GCM_SHA384)
        assert server.ctx._peer_certificate is None


# ======================================================================================
# aioquic client -> our ServerEngine
# ======================================================================================


class TestAioquicClientOurServer:
    @ALL_SUITES
    def test_cipher_suite(self, clock, suite):
        client, server = run_aioquic_client_vs_ours(
            aio_client(cipher_suites=[aiotls.CipherSuite(suite)]), our_server_config(), clock.now
        )
        check_pair(server, client, ours_is_client=False, suite=suite)

    @ALL_SUITES
    def test_cipher_suite_we_accept_only_one(self, clock, suite):
        client, server = run_aioquic_client_vs_ours(
            aio_client(), our_server_config(cipher_suites=[suite]), clock.now
        )
        check_pair(server, client, ours_is_client=False, suite=suite)

    def test_defaults_follow_our_preference(self, clock):
        """Our server prefers AES-128-GCM and, of aioquic's shares, X25519 (our default
        group list leads with X25519; X25519MLKEM768 is not offered, so no retry)."""
        client, server = run_aioquic_client_vs_ours(aio_client(), our_server_config(), clock.now)
        check_pair(server, client, ours_is_client=False, suite=CipherSuite.AES_128_GCM_SHA256,
                   group=NamedGroup.X25519)

    def test_mlkem_preferring_server_uses_classical_share(self, clock):
        groups = [NamedGroup.X25519MLKEM768, NamedGroup.SECP384R1, NamedGroup.X25519]
        client, server = run_aioquic_client_vs_ours(aio_client(), our_server_config(groups=groups), clock.now)
        check_pair(server, client, ours_is_client=False, suite=CipherSuite.AES_128_GCM_SHA256,
                   group=NamedGroup.SECP384R1)

    @COMMON_GROUPS
    def test_group(self, clock, group):
        client, server = run_aioquic_client_vs_ours(aio_client(), our_server_config(groups=[group]),
                                                    clock.now)
        check_pair(server, client, ours_is_client=False, suite=CipherSuite.AES_128_GCM_SHA256, group=group)

    @CERT_KINDS
    def test_server_certificate(self, clock, kind, scheme):
        client, server = run_aioquic_client_vs_ours(aio_client(), our_server_config(kind), clock.now)
        check_pair(server, client, ours_is_client=False, suite=CipherSuite.AES_128_GCM_SHA256)
        assert der(client.ctx._peer_certificate) == der(interop_leaf(kind)[0])

    def test_chain_with_intermediate(self, clock):
        leaf, inter, key = chained_leaf()
        cfg = our_server_config(credentials=Credentials([leaf, inter], key))
        client, server = run_aioquic_client_vs_ours(aio_client(), cfg, clock.now)
        check_pair(server, client, ours_is_client=False, suite=CipherSuite.AES_128_GCM_SHA256)
        assert der(client.ctx._peer_certificate) == der(leaf)
        assert [der(c) for c in client.ctx._peer_certificate_chain] == [der(inter)]

    def test_ip_address_server_name(self, clock):
        client, server = run_aioquic_client_vs_ours(aio_client(server_name="127.0.0.1"), our_server_config(),
                                                    clock.now)
        assert server.complete.server_name is None  # aioquic leaves IP literals out of SNI
        assert client.connected and client.ctx.key_schedule.cipher_suite == CipherSuite.AES_128_GCM_SHA256
        check_secrets(client.secrets(), server.secrets(), CipherSuite.AES_128_GCM_SHA256,
                      early_sent=False, early_accepted=False)

    @pytest.mark.parametrize("chunk", [1, 7, 100])
    def test_fragmented_delivery(self, clock, chunk):
        client, server = run_aioquic_client_vs_ours(
            aio_client(cert_kind="rsa"), our_server_config("rsa", client_auth=ClientAuth.REQUIRED),
            clock.now, chunk=chunk,
        )
        check_pair(server, client, ours_is_client=False, suite=CipherSuite.AES_128_GCM_SHA256)

    def test_aioquic_rejects_unknown_ca(self, clock):
        ctx = aio_client(cadata=make_ca("another CA").cert.public_bytes(Encoding.PEM))
        with pytest.raises(aiotls.AlertBadCertificate):
            run_aioquic_client_vs_ours(ctx, our_server_config(), clock.now)

    def test_aioquic_rejects_wrong_name(self, clock):
        with pytest.raises(aiotls.AlertBadCertificate):
            run_aioquic_client_vs_ours(aio_client(server_name="example.org"), our_server_config(), clock.now)

    def test_no_common_alpn(self, clock):
        with pytest.raises(TlsError) as err:
            run_aioquic_client_vs_ours(aio_client(alpn_protocols=["hq-interop"]), our_server_config(),
                                       clock.now)
        assert err.value.alert == AlertDescription.no_application_protocol

    # -- resumption and 0-RTT ---------------------------------------------------------------

    def _ticket(self, clock, suite, server_cfg) -> aiotls.SessionTicket:
        client, server = run_aioquic_client_vs_ours(
            aio_client(cipher_suites=[aiotls.CipherSuite(suite)]), server_cfg, clock.now
        )
        check_pair(server, client, ours_is_client=False, suite=suite)
        assert len(client.tickets) == 1, "aioquic got no NewSessionTicket from us"
        ticket = client.tickets[0]
        assert ticket.cipher_suite == suite
        return ticket

    @ALL_SUITES
    def test_resumption_with_our_ticket(self, clock, suite):
        cfg = our_server_config(session_ticket_key=bytes(range(64)))
        ticket = self._ticket(clock, suite, cfg)
        assert ticket.max_early_data_size is None
        clock.advance(30)
        client, server = run_aioquic_client_vs_ours(
            aio_client(cipher_suites=[aiotls.CipherSuite(suite)], session_ticket=ticket), cfg, clock.now
        )
        check_pair(server, client, ours_is_client=False, suite=suite, resumed=True)

    @ALL_SUITES
    def test_early_data_accepted(self, clock, suite):
        cfg = our_server_config(session_ticket_key=bytes(range(64)), enable_early_data=True)
        ticket = self._ticket(clock, suite, cfg)
        assert ticket.max_early_data_size == QUIC_MAX_EARLY_DATA
        # A minute later on both clocks: the obfuscated ticket age must decode to the
        # server's own view within the 10 s tolerance for 0-RTT to be accepted.
        clock.advance(60)
        client, server = run_aioquic_client_vs_ours(
            aio_client(cipher_suites=[aiotls.CipherSuite(suite)], session_ticket=ticket), cfg, clock.now
        )
        check_pair(server, client, ours_is_client=False, suite=suite, resumed=True,
                   early_sent=True, early_accepted=True)

    def test_resumption_when_our_preferred_suite_differs_from_the_ticket(self, clock):
        """A CHACHA20 ticket while aioquic also offers AES-128-GCM: our server resumes under
        the ticket's own suite (aioquic 1.7.2 insists on it), which also keeps 0-RTT."""
        cfg = our_server_config(session_ticket_key=bytes(range(64)), enable_early_data=True)
        ticket = self._ticket(clock, CipherSuite.CHACHA20_POLY1305_SHA256, cfg)
        client, server = run_aioquic_client_vs_ours(aio_client(session_ticket=ticket), cfg, clock.now)
        check_pair(server, client, ours_is_client=False, suite=CipherSuite.CHACHA20_POLY1305_SHA256,
                   resumed=True, early_sent=True, early_accepted=True)

    def test_resumption_keeps_client_certificate(self, clock):
        """On resumption the server reports the client certificate of the first handshake."""
        suite = CipherSuite.AES_128_GCM_SHA256
        cfg = our_server_config(session_ticket_key=bytes(range(64)), client_auth=ClientAuth.REQUIRED)
        client, server = run_aioquic_client_vs_ours(
            aio_client(cipher_suites=[aiotls.CipherSuite(suite)], cert_kind="ed25519"), cfg, clock.now
        )
        check_pair(server, client, ours_is_client=False, suite=suite)
        (ticket,) = client.tickets
        client, server = run_aioquic_client_vs_ours(
            aio_client(cipher_suites=[aiotls.CipherSuite(suite)], session_ticket=ticket), cfg, clock.now
        )
        check_pair(server, client, ours_is_client=False, suite=suite, resumed=True)
        expected = interop_leaf("ed25519", "aioquic client")[0]
        assert [der(c) for c in server.complete.peer_certificates] == [der(expected)]

    def test_early_data_rejected_by_server_without_early_data(self, clock):
        key = bytes(range(64))
        suite = CipherSuite.AES_256_GCM_SHA384
        ticket = self._ticket(clock, suite, our_server_config(session_ticket_key=key, enable_early_data=True))
        client, server = run_aioquic_client_vs_ours(
            aio_client(cipher_suites=[aiotls.CipherSuite(suite)], session_ticket=ticket),
            our_server_config(session_ticket_key=key, enable_early_data=False), clock.now,
        )
        check_pair(server, client, ours_is_client=False, suite=suite, resumed=True,
                   early_sent=True, early_accepted=False)

    def test_early_data_replay_rejected(self, clock):
        """The same ticket twice: 0-RTT once, then only resumption (RFC 8446 §8)."""
        suite = CipherSuite.AES_128_GCM_SHA256
        cfg = our_server_config(session_ticket_key=bytes(range(64)), enable_early_data=True)
        ticket = self._ticket(clock, suite, cfg)
        results = []
        for _ in range(2):
            client, server = run_aioquic_client_vs_ours(
                aio_client(cipher_suites=[aiotls.CipherSuite(suite)], session_ticket=ticket), cfg, clock.now
            )
            results.append((client, server))
        check_pair(results[0][1], results[0][0], ours_is_client=False, suite=suite, resumed=True,
                   early_sent=True, early_accepted=True)
        check_pair(results[1][1], results[1][0], ours_is_client=False, suite=suite, resumed=True,
                   early_sent=True, early_accepted=False)

    def _psk_ke_client(self, ticket=None) -> aiotls.Context:
        ctx = aio_client(cipher_suites=[aiotls.CipherSuite(CipherSuite.AES_128_GCM_SHA256)],
                         session_ticket=ticket)
        ctx._psk_key_exchange_modes = [aiotls.PskKeyExchangeMode.PSK_KE]
        return ctx

    def test_psk_ke_offer_gets_a_server_hello_without_key_share(self, clock):
        """Our server answers a psk_ke-only resumption as RFC 8446 §4.2.9 says, without
        key_share; aioquic, having no psk_ke, cannot take that answer."""
        cfg = our_server_config(session_ticket_key=bytes(range(64)))
        client, _ = run_aioquic_client_vs_ours(self._psk_ke_client(), cfg, clock.now)
        (ticket,) = client.tickets  # issued: psk_ke is a mode we share
        with pytest.raises(aiotls.AlertMissingExtension):
            run_aioquic_client_vs_ours(self._psk_ke_client(ticket), cfg, clock.now)

    def test_psk_dhe_ke_only_server_falls_back_to_full_handshake(self, clock):
        """A server configured to refuse psk_ke, given a psk_ke-only offer: a full
        handshake, which aioquic completes."""
        key = bytes(range(64))
        client, _ = run_aioquic_client_vs_ours(self._psk_ke_client(),
                                               our_server_config(session_ticket_key=key), clock.now)
        (ticket,) = client.tickets
        client, server = run_aioquic_client_vs_ours(
            self._psk_ke_client(ticket), our_server_config(session_ticket_key=key, psk_modes=[1]), clock.now
        )
        check_pair(server, client, ours_is_client=False, suite=CipherSuite.AES_128_GCM_SHA256, resumed=False,
                   early_sent=False)
        assert client.tickets == [], "no ticket for a client whose only mode we refuse"

    def test_early_data_rejected_by_server_with_other_ticket_key(self, clock):
        suite = CipherSuite.CHACHA20_POLY1305_SHA256
        ticket = self._ticket(
            clock, suite, our_server_config(session_ticket_key=bytes(64), enable_early_data=True)
        )
        client, server = run_aioquic_client_vs_ours(
            aio_client(cipher_suites=[aiotls.CipherSuite(suite)], session_ticket=ticket),
            our_server_config(session_ticket_key=bytes(range(64)), enable_early_data=True), clock.now,
        )
        check_pair(server, client, ours_is_client=False, suite=suite, resumed=False,
                   early_sent=True, early_accepted=False)

    # -- client certificates ----------------------------------------------------------------

    @pytest.mark.parametrize(
        "kind,scheme",
        [
            ("p256", SignatureScheme.ECDSA_SECP256R1_SHA256),
            ("rsa", SignatureScheme.RSA_PSS_RSAE_SHA256),
            ("ed25519", SignatureScheme.ED25519),
        ],
        ids=["ecdsa-p256", "rsa-pss", "ed25519"],
    )
    def test_client_certificate(self, clock, kind, scheme):
        client, server = run_aioquic_client_vs_ours(
            aio_client(cert_kind=kind), our_server_config(client_auth=ClientAuth.REQUIRED), clock.now
        )
        check_pair(server, client, ours_is_client=False, suite=CipherSuite.AES_128_GCM_SHA256)
        done = server.complete
        assert [der(c) for c in done.peer_certificates] == [der(interop_leaf(kind, "aioquic client")[0])]
        assert done.signature_scheme == scheme

    def test_client_without_certificate_optional(self, clock):
        client, server = run_aioquic_client_vs_ours(
            aio_client(), our_server_config(client_auth=ClientAuth.OPTIONAL), clock.now
        )
        check_pair(server, client, ours_is_client=False, suite=CipherSuite.AES_128_GCM_SHA256)
        assert server.complete.peer_certificates == ()

    def test_client_without_certificate_required(self, clock):
        with pytest.raises(TlsError) as err:
            run_aioquic_client_vs_ours(aio_client(), our_server_config(client_auth=ClientAuth.REQUIRED),
                                       clock.now)
        assert err.value.alert == AlertDescription.certificate_required

    def test_client_certificate_from_unknown_ca(self, clock):
        other = TrustStore.from_certificates([make_ca("another CA").cert])
        with pytest.raises(TlsError) as err:
            run_aioquic_client_vs_ours(
                aio_client(cert_kind="p256"),
                our_server_config(client_auth=ClientAuth.REQUIRED, trust=other), clock.now,
            )
        assert err.value.alert == AlertDescription.unknown_ca
