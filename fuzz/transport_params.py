"""Target transport_params: the quic_transport_parameters extension (RFC 9000 §18, RFC 9001
§8.2) as quichsd/quic/transport_params.py decodes it and quichsd/sock/sim/tparams.py checks
it (the simulation's TRANSPORT_PARAM_EXT setsockopt: the peer's blob from the TLS engine).

Input: the first byte's low bit says who sent the blob (client or server); the rest is it.

A bug is: any exception but QuicError from the decoder or from parse_peer_blob; a QuicError
from the decoder with another code than TRANSPORT_PARAMETER_ERROR (from parse_peer_blob,
also VERSION_NEGOTIATION_ERROR); parameters that decode but do not decode again, equal,
from their own encoding.
"""
from __future__ import annotations

from quichsd.quic.errors import QuicError, QuicErrorCode
from quichsd.quic.transport_params import TransportParameters
from quichsd.sock.sim.tparams import parse_peer_blob

_TPE = QuicErrorCode.TRANSPORT_PARAMETER_ERROR
_PEER_CODES = frozenset({QuicErrorCode.TRANSPORT_PARAMETER_ERROR, QuicErrorCode.VERSION_NEGOTIATION_ERROR})


def one_input(data: bytes) -> None:
    if not data:
        return
    sender = "server" if data[0] & 1 else "client"
    blob = data[1:]
    try:
        params = TransportParameters.decode(blob, sender)
    except QuicError as err:
        assert err.error_code == _TPE, err
        return
    again = TransportParameters.decode(params.encode(), sender)
    assert again == params, f"round trip:\n{params}\n{again}"
    # The simulation's checks, given the CIDs the blob itself names, so they get past the
    # equality checks and reach the rest.
    odcid = params.original_destination_connection_id or b""
    peer_cid = params.initial_source_connection_id or b""
    try:
        peer = parse_peer_blob(blob, we_are_client=sender == "server", original_dcid=odcid, peer_cid=peer_cid)
    except QuicError as err:
        assert err.error_code in _PEER_CODES, err
        return
    assert peer.initial_source_connection_id == peer_cid
    assert all(isinstance(v, int) and v >= 0 for v in peer.fields.values()), peer.fields
