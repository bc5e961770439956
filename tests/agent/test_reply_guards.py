"""What a reply must not say (agent.reply_guards): told something, the reply never completes the user's name,
introduced in the session or in a note, after "I'm" and its like; the session's recent replies are guarded as
before."""

from __future__ import annotations

from agent.recall_note import introduced_names
from agent.reply_guards import claims, reply_guards
from memory.eventlog import append_events
from models import SamplingConfig
from models.generate import banned_by_claims
from tests.agent.test_pretrained_chat import GREEDY, _new_session, imported_agent  # noqa: F401 - fixture
from tests.dbs import db_url, empty_db_url, sessions  # noqa: F401 - fixtures


def test_names_are_found_where_someone_introduces_themselves():
    assert introduced_names("Hi! I'm Quentin.") == ["Quentin"]
    assert introduced_names("Good evening, I am Dr. Okafor. My name is Ines, call me Nessa") == \
        ["Okafor", "Ines", "Nessa"]
    assert introduced_names("I\u2019m Ines.") == ["Ines"]  # a phone's apostrophe
    assert introduced_names("I'm planning a trip to Lisbon. i am tired.") == []  # not a name after "I'm"


def test_a_reply_never_says_the_users_name_after_im(sessions, imported_agent):
    agent_id, runtime = imported_agent
    tokenizer = runtime().serving.current().model.tokenizer
    runs = claims(["Quentin"], tokenizer)
    for said in ("I'm", "Well, I'm", "Hello. My name is", "I am", "Hello, I\u2019m"):
        reply = tokenizer.encode(said.encode())
        whole = tokenizer.encode(f"{said} Quentin".encode())
        assert whole[: len(reply)] == reply  # the name's first token follows what was said
        assert whole[len(reply)] in banned_by_claims(reply, runs), said
    assert banned_by_claims(tokenizer.encode(b"You are"), runs) == []

    told, other = _new_session(sessions, agent_id), _new_session(sessions, agent_id)
    with sessions.begin() as db:
        append_events(db, session_id=told, events=[("user", b"Hi! I'm Quentin."), ("assistant", b"Hello."),
                                                   ("user", b"I work as a glassblower.")])
        append_events(db, session_id=other, events=[("user", b"I am back.")])
    sampling = SamplingConfig()
    with sessions() as db:
        guarded = reply_guards(db, tokenizer=tokenizer, session_id=told, sampling=sampling, note="")
        unguarded = reply_guards(db, tokenizer=tokenizer, session_id=other, sampling=sampling, note="")
        # An earlier session's introduction, read in a note, is the user's name as well.
        noted = reply_guards(db, tokenizer=tokenizer, session_id=other, sampling=sampling,
                             note="From your memory: (you said on 7 December 2026) Hi! I'm Quentin.\n\n")
    assert guarded.claims == runs and noted.claims == runs and unguarded.claims == []
    assert guarded.earlier == [tokenizer.encode(b"Hello.")] and unguarded.earlier == []
    # Asked something, the reply is not guarded: the model's answer to "What's my name?" is often "I'm Quentin."
    with sessions.begin() as db:
        append_events(db, session_id=told, events=[("assistant", b"Good."), ("user", b"What is my name?")])
    with sessions() as db:
        assert reply_guards(db, tokenizer=tokenizer, session_id=told, sampling=sampling, note="").claims == []
