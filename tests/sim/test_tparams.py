"""The simulation's transport parameters (kernel ABI spec §1.3, §1.4, §5): the struct's fields
against the cffi layout, the kernel's checks and clipping of the peer's blob, and the local
blob read back as the peer would."""
from __future__ import annotations

import pytest

from quichsd.abi import ffi
from quichsd.quic.errors import QuicError, QuicErrorCode
from quichsd.quic.transport_params import TransportParameters, VersionInformation
from quichsd.sock.sim import tparams

ODCID, CID = b"\x22" * 8, b"\x11" * 8


def test_fields_are_the_structs_in_its_order() -> None:
    names = [name for name, _ in ffi.typeof("struct quic_transport_param").fields]
    assert names[0] == "remote"
    assert list(tparams.FIELDS) == names[1:]


def peer(we_are_client: bool = False, **params: object) -> dict[str, int]:
    """The struct values the kernel keeps from a peer blob with these parameters."""
    tp = TransportParameters(initial_source_connection_id=CID, **params)  # type: ignore[arg-type]
    if we_are_client:
        tp.original_destination_connection_id = ODCID
    parsed = tparams.parse_peer_blob(tp.encode(), we_are_client=we_are_client, original_dcid=ODCID,
                                     peer_cid=CID)
    assert list(parsed.fields) == list(tparams.FIELDS)
    return parsed.fields


def test_peer_defaults_and_units() -> None:
    assert peer() == tparams.PEER_DEFAULTS
    got = peer(max_idle_timeout=1000, max_ack_delay=30, initial_max_data=5, max_udp_payload_size=65527,
               active_connection_id_limit=8, max_datagram_frame_size=1200, disable_active_migration=True,
               grease_quic_bit=True, stateless_reset_token=bytes(16), we_are_client=True,
               version_information=VersionInformation(1, (1,)))
    assert got["max_idle_timeout"] == 1_000_000 and got["max_ack_delay"] == 30_000  # ms -> µs
    assert got["max_data"] == 5  # the peer's credit is not held to the 1200 a set needs
    assert got["max_udp_payload_size"] == 65527 and got["active_connection_id_limit"] == 8
    assert got["max_datagram_frame_size"] == 1200
    assert got["disable_active_migration"] == got["grease_quic_bit"] == got["stateless_reset"] == 1
    assert got["disable_compatible_version"] == 0  # version_information was sent


def test_peer_values_clipped() -> None:
    got = peer(initial_max_streams_bidi=5000, initial_max_streams_uni=1 << 60,
               max_idle_timeout=5_000_000, max_datagram_frame_size=70_000)
    assert got["max_streams_bidi"] == got["max_streams_uni"] == tparams.MAX_STREAMS
    assert got["max_idle_timeout"] == 0xFFFFFFFF and got["max_datagram_frame_size"] == 65535


@pytest.mark.parametrize("params", [
    {"max_idle_timeout": 999}, {"max_udp_payload_size": 65528}, {"active_connection_id_limit": 9},
    {"max_datagram_frame_size": 1199},
], ids=lambda p: next(iter(p)))
def test_peer_values_the_kernel_refuses(params: dict[str, int]) -> None:
    with pytest.raises(QuicError) as info:
        peer(**params)
    assert info.value.error_code == QuicErrorCode.TRANSPORT_PARAMETER_ERROR
    assert next(iter(params)) in info.value.reason


def test_zero_idle_timeout_and_datagram_size_mean_none() -> None:
    got = peer(max_idle_timeout=0, max_datagram_frame_size=0)
    assert got["max_idle_timeout"] == got["max_datagram_frame_size"] == 0


def test_disable_1rtt_encryption_with_a_value_only_a_server_accepts() -> None:
    assert peer(disable_1rtt_encryption=b"")["disable_1rtt_encryption"] == 1
    assert peer(disable_1rtt_encryption=b"\x01")["disable_1rtt_encryption"] == 1
    assert peer(we_are_client=True, disable_1rtt_encryption=b"")["disable_1rtt_encryption"] == 1
    with pytest.raises(QuicError) as info:
        peer(we_are_client=True, disable_1rtt_encryption=b"\x01")
    assert info.value.error_code == QuicErrorCode.TRANSPORT_PARAMETER_ERROR


@pytest.mark.parametrize("config", [
    {},
    {"max_idle_timeout": 1_500_000, "max_ack_delay": 40_000, "ack_delay_exponent": 0,
     "max_udp_payload_size": 1400, "active_connection_id_limit": 2, "max_datagram_frame_size": 1500,
     "disable_active_migration": 1, "grease_quic_bit": 1, "disable_1rtt_encryption": 1,
     "max_streams_uni": 4096},
], ids=["defaults", "everything"])
def test_local_blob_read_back_as_the_peer_gives_the_configuration(config: dict[str, int]) -> None:
    """What the kernel leaves out of its blob (§5) is what the peer assumes by default, so a
    blob parsed by the other side gives back the configuration (times here are whole ms)."""
    local = tparams.merge_fields(tparams.LOCAL_DEFAULTS, config, remote=False)
    blob = tparams.build_local_blob(local, is_client=True, local_cid=CID, original_dcid=ODCID, version=1,
                                    peer_sent_version_info=False, reset_token=None)
    got = tparams.parse_peer_blob(blob, we_are_client=False, original_dcid=ODCID, peer_cid=CID)
    assert got.fields == local
    assert got.version_information == VersionInformation(1, tparams.AVAILABLE_VERSIONS)


def test_local_blob_rounds_times_up_to_milliseconds() -> None:
    local = tparams.merge_fields(tparams.LOCAL_DEFAULTS, {"max_idle_timeout": 1_000_001}, remote=False)
    blob = tparams.build_local_blob(local, is_client=True, local_cid=CID, original_dcid=ODCID, version=1,
                                    peer_sent_version_info=False, reset_token=None)
    assert TransportParameters.decode(blob, "client").max_idle_timeout == 1001


@pytest.mark.parametrize(("fields", "remote", "stored"), [
    ({"max_streams_bidi": 5000}, True, 4096),
    ({"max_data": 1 << 40}, True, 1 << 40),
    ({"max_data": 1000}, True, None),
    ({"max_data": 1 << 30}, False, None),
    ({"max_streams_bidi": 4097}, False, None),
    ({"max_ack_delay": 16_383_999}, False, 16_383_999),
    ({"max_ack_delay": 16_384_000}, True, None),
])
def test_set_rules(fields: dict[str, int], remote: bool, stored: int | None) -> None:
    """§1.4: a set checks the kernel's ranges; a remote stream count is clipped, a local one
    refused; only local flow-control windows are held to the kernel's buffer limits."""
    (name, value), = fields.items()
    if stored is None:
        with pytest.raises(ValueError, match=name):
            tparams.merge_fields(tparams.ZERO, fields, remote)
    else:
        assert tparams.merge_fields(tparams.ZERO, fields, remote)[name] == stored
