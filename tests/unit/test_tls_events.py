"""The engine's events are plain frozen dataclasses: built by keyword or position, equal by
value, hashable, immutable, without a per-instance dict, and secrets stay out of repr."""
from __future__ import annotations

import dataclasses

import pytest

from quichsd.tls.constants import CryptoLevel, Direction
from quichsd.tls.events import (
    HandshakeComplete,
    InstallSecret,
    KeyLogLine,
    PeerTransportParameters,
    SendHandshake,
)

SECRET = bytes(range(32))


def complete(**changes: object) -> HandshakeComplete:
    fields: dict[str, object] = dict(
        version=0x0304, cipher_suite=0x1301, group=0x001D, alpn=b"h3", signature_scheme=0x0403,
        peer_certificates=(), psk_identity=None, resumed=False, early_data_accepted=False,
        server_name="localhost",
    )
    fields.update(changes)
    return HandshakeComplete(**fields)


EVENTS = [
    SendHandshake(CryptoLevel.INITIAL, b"\x01\x00\x00\x00"),
    InstallSecret(CryptoLevel.HANDSHAKE, Direction.SEND, 51, SECRET),
    PeerTransportParameters(b"\x04\x04\x80\x10\x00\x00"),
    KeyLogLine("CLIENT_HANDSHAKE_TRAFFIC_SECRET", bytes(32), SECRET),
    complete(),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_events_are_frozen_slotted_value_objects(event: object) -> None:
    assert dataclasses.is_dataclass(event)
    values = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    again = type(event)(**values)
    assert again == event and hash(again) == hash(event)
    assert type(event)(*values.values()) == event  # positional, in field order
    assert not hasattr(event, "__dict__")
    name = next(iter(values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, name, values[name])


def test_events_differing_in_one_field_are_not_equal() -> None:
    assert InstallSecret(CryptoLevel.APP, Direction.SEND, 51, SECRET) != \
        InstallSecret(CryptoLevel.APP, Direction.RECV, 51, SECRET)
    assert complete(resumed=True) != complete()


@pytest.mark.parametrize("event", [e for e in EVENTS if isinstance(e, (InstallSecret, KeyLogLine))],
                         ids=lambda e: type(e).__name__)
def test_secrets_stay_out_of_repr(event: object) -> None:
    text = repr(event)
    assert SECRET.hex() not in text and repr(SECRET) not in text
