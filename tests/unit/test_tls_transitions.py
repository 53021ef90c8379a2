"""The TLS state machines as tables (quichsd/tls/*.TRANSITIONS): every (state, step) the
table names leads where it says, every other step in every state is unexpected_message,
and every state of the dispatch table is reachable from the start and leads to CONNECTED."""
from __future__ import annotations

import enum
from collections.abc import Mapping

import pytest

from quichsd.tls.client import CLIENT_STATES, CLIENT_TRANSITIONS, ClientEngine, ClientState
from quichsd.tls.constants import AlertDescription
from quichsd.tls.engine import next_state
from quichsd.tls.errors import TlsError
from quichsd.tls.server import SERVER_STATES, SERVER_TRANSITIONS, ServerEngine, ServerState

ROLES = [
    pytest.param(CLIENT_TRANSITIONS, CLIENT_STATES, ClientState, ClientEngine, id="client"),
    pytest.param(SERVER_TRANSITIONS, SERVER_STATES, ServerState, ServerEngine, id="server"),
]


@pytest.mark.parametrize(("table", "dispatch", "states", "engine"), ROLES)
def test_every_state_and_step(table: Mapping, dispatch: Mapping, states: type[enum.Enum],
                              engine: type) -> None:
    steps = {step for _, step in table}
    for state in states:
        for step in steps:
            if (state, step) in table:
                assert next_state(table, state, step) is table[(state, step)]
            else:
                with pytest.raises(TlsError) as info:
                    next_state(table, state, step)
                assert info.value.alert == AlertDescription.unexpected_message
                assert state.name in str(info.value)


@pytest.mark.parametrize(("table", "dispatch", "states", "engine"), ROLES)
def test_every_state_is_reachable_and_can_finish(table: Mapping, dispatch: Mapping, states: type[enum.Enum],
                                                 engine: type) -> None:
    edges: dict[enum.Enum, set[enum.Enum]] = {}
    for (state, _step), following in table.items():
        edges.setdefault(state, set()).add(following)

    def reachable(start: enum.Enum) -> set[enum.Enum]:
        seen, todo = {start}, [start]
        while todo:
            for following in edges.get(todo.pop(), ()):
                if following not in seen:
                    seen.add(following)
                    todo.append(following)
        return seen

    assert reachable(engine.INITIAL_STATE) == set(states) == set(dispatch)
    for state in states:
        assert states.CONNECTED in reachable(state)
    assert states.CONNECTED not in edges  # nothing leaves CONNECTED


@pytest.mark.parametrize(("table", "dispatch", "states", "engine"), ROLES)
def test_messages_a_state_takes_are_steps_from_it(table: Mapping, dispatch: Mapping, states: type[enum.Enum],
                                                  engine: type) -> None:
    """A state that takes a message (the dispatch table) has a way out for it; a state with
    no step out takes no message, except CONNECTED (tickets do not change it)."""
    for state, expected in dispatch.items():
        has_steps = any(s is state for s, _ in table)
        if state is states.CONNECTED:
            continue
        assert has_steps or not expected, state
