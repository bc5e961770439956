"""A chat session forgets too: after a forget with weights, its serving state holds nothing of what was forgotten.

Each test compares the session with a reference session whose log is the first one's without the forgotten
message: the same reply (greedy) and the same state, bit for bit.
"""

from __future__ import annotations

import torch
from sqlalchemy import select

from learner.forget import forget_source
from memory.eventlog import append_events
from memory.schema import Event, StreamSession
from models import State
from tests.agent.test_pretrained_chat import GREEDY, _new_session, imported_agent  # noqa: F401 - fixture
from tests.dbs import db_url, empty_db_url, sessions  # noqa: F401 - fixtures

SECRET = b"the vault code is 7316"


def _forget(sessions, agent_id: int, event_id: int) -> None:
    with sessions.begin() as db:
        forget_source(db, agent_id=agent_id, weights=True, event_id=event_id)


def _log(sessions, session_id: int) -> list[tuple[str, bytes]]:
    with sessions() as db:
        events = db.scalars(select(Event).where(Event.session_id == session_id, Event.forgotten_at.is_(None))
                            .order_by(Event.seq))
        return [(event.role, event.content) for event in events]


def _state(sessions, session_id: int) -> tuple | None:
    """The session's saved serving state as comparable values (the blob's metadata order varies between saves)."""
    with sessions() as db:
        blob = db.get(StreamSession, session_id).state
    if blob is None:
        return None
    state = State.from_bytes(blob)
    tensors = [(name, tensor.view(-1).view(torch.uint8).numpy().tobytes())
               for layer in state.layers for name, tensor in layer._asdict().items()]
    return state.position, state.tokenizer, tensors


def _reference(sessions, agent_id: int, log: list[tuple[str, bytes]]) -> int:
    """A session told `log` (without being served it), ready for its next turn."""
    session_id = _new_session(sessions, agent_id)
    with sessions.begin() as db:
        append_events(db, session_id=session_id, events=log)
    return session_id


def test_a_forgotten_message_is_gone_from_its_sessions_state(sessions, imported_agent):
    agent_id, runtime = imported_agent
    serving = runtime()  # one process throughout: its cached state must not outlive the forget either
    told = _new_session(sessions, agent_id)
    secret = serving.chat(session_id=told, content=SECRET, sampling=GREEDY).user_event_id
    serving.chat(session_id=told, content=b"hello", sampling=GREEDY)
    remembered = _state(sessions, told)

    _forget(sessions, agent_id, secret)
    assert _state(sessions, told) is None  # dropped at once
    reference = _reference(sessions, agent_id, _log(sessions, told))
    assert [content for _, content in _log(sessions, told)].count(SECRET) == 0

    asked = serving.chat(session_id=told, content=b"what is the code?", sampling=GREEDY)
    expected = serving.chat(session_id=reference, content=b"what is the code?", sampling=GREEDY)
    assert asked.reply == expected.reply
    assert _state(sessions, told) == _state(sessions, reference) != remembered


def test_a_message_forgotten_while_a_turn_reads_it_is_not_kept_in_the_state(sessions, imported_agent):
    agent_id, runtime = imported_agent
    serving = runtime()
    told = _new_session(sessions, agent_id)
    secret = serving.chat(session_id=told, content=SECRET, sampling=GREEDY).user_event_id
    forgotten = []

    def forget_once(_piece: str) -> None:  # as a forget request would, from another thread, mid-reply
        if not forgotten:
            _forget(sessions, agent_id, secret)
            forgotten.append(True)

    serving.chat(session_id=told, content=b"hello", sampling=GREEDY, on_piece=forget_once)
    assert forgotten and _state(sessions, told) is None  # the turn that read it did not save its state
    reference = _reference(sessions, agent_id, _log(sessions, told))
    asked = serving.chat(session_id=told, content=b"what is the code?", sampling=GREEDY)
    expected = serving.chat(session_id=reference, content=b"what is the code?", sampling=GREEDY)
    assert asked.reply == expected.reply and _state(sessions, told) == _state(sessions, reference)
