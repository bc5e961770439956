"""The lexical index over memories' text (memory.lexical), on both databases: it ranks the memory naming what
is asked first, and a memory gone (deleted, forgotten, its agent deleted) never matches again."""

from __future__ import annotations

from sqlalchemy import text

from memory.admin import delete_agent, delete_memories
from memory.lexical import lexical_search, query_words
from memory.schema import Memory

PARAGRAPHS = [
    "The committee met on Tuesday to discuss the harbour budget and the new ferry timetable for the summer.",
    "Rain fell all week; the gardeners moved the seedlings into the greenhouse and repaired the gate.",
    "In the archive, the locker code for the map room is 4417-Q, written on a card behind the third shelf.",
    "The choir rehearsed the winter programme twice, and the conductor asked for softer entries.",
    "A storm closed the harbour road; the ferry ran late and the committee postponed its vote.",
]


def _store(sessions, agent_id: int, texts: list[str]) -> list[int]:
    with sessions.begin() as db:
        rows = [Memory(agent_id=agent_id, byte_start=0, byte_end=len(t), text=t, num_tokens=len(t.split()),
                       head_dim=1, keys=b"\0\0", values=b"\0\0") for t in texts]
        db.add_all(rows)
        db.flush()
        return [row.id for row in rows]


def _found(sessions, agent_id: int, query: str) -> list[int]:
    with sessions() as db:
        return [hit.memory_id for hit in lexical_search(db, agent_id=agent_id, text_=query, limit=10)]


def test_the_memory_naming_what_is_asked_ranks_first_among_paragraphs_of_other_text(sessions, make_agent):
    agent = make_agent("a")
    ids = _store(sessions, agent, PARAGRAPHS * 3)  # many memories, each word of the question but one common
    fact = ids[2]
    found = _found(sessions, agent, "What is the code of the locker in the map room?")
    assert found[0] in {fact, ids[7], ids[12]}  # the fact, stored three times
    assert set(found[:3]) == {fact, ids[7], ids[12]}
    # A rare word outweighs words every memory shares: "harbour" is in two paragraphs of five, "greenhouse" in one.
    assert _found(sessions, agent, "the harbour greenhouse")[0] in {ids[1], ids[6], ids[11]}
    # Stemmed: "rehearsing" finds "rehearsed" (PostgreSQL's english stemmer, SQLite's porter).
    assert _found(sessions, agent, "rehearsing")[0] in {ids[3], ids[8], ids[13]}


def test_a_query_of_function_words_or_punctuation_finds_nothing(sessions, make_agent):
    agent = make_agent("a")
    _store(sessions, agent, PARAGRAPHS)
    assert query_words('What is it? "NEAR" (AND) * - NEAR') == ["near"]
    assert _found(sessions, agent, "what is it?") == []
    assert _found(sessions, agent, '" NEAR( * : ^') == []  # FTS5 syntax is never read as syntax


def test_deleted_forgotten_and_other_agents_memories_never_match(sessions, make_agent):
    agent, other = make_agent("a"), make_agent("b")
    mine = _store(sessions, agent, PARAGRAPHS)
    theirs = _store(sessions, other, ["The locker code is 9921-Z, kept in the map room."])
    assert set(_found(sessions, agent, "locker map room")) == {mine[2]}
    assert _found(sessions, other, "locker map room") == theirs
    with sessions.begin() as db:
        row = db.get(Memory, mine[2])
        row.text = "The locker code was changed; ask the porter."  # an edited text is indexed anew
    assert _found(sessions, agent, "map room") == [] and _found(sessions, agent, "porter") == [mine[2]]
    with sessions.begin() as db:
        delete_memories(db, agent_id=agent, memory_id=mine[2])
    assert _found(sessions, agent, "porter") == []
    with sessions.begin() as db:
        delete_agent(db, agent_id=other)
    assert _found(sessions, other, "locker map room") == []
    with sessions() as db:  # the index itself holds none of their words (PostgreSQL's is over the rows' text)
        if db.get_bind().dialect.name == "sqlite":
            assert db.execute(text("SELECT rowid FROM memories_fts WHERE memories_fts MATCH '\"9921\" OR porter'")
                              ).all() == []


def test_told_only_finds_what_the_agent_was_told_not_its_replies_nor_what_it_was_asked(sessions, make_agent):
    from memory.eventlog import append_events, create_session

    agent = make_agent("a")
    with sessions.begin() as db:
        session_id = create_session(db, agent_id=agent).id
        said = append_events(db, session_id=session_id, events=[
            ("user", b"What is the code of the blue locker?"), ("assistant", b"The blue locker code is 1234."),
            ("user", b"The blue locker code is 4471."), ("assistant", b"Noted: the blue locker code.")])
        rows = [Memory(agent_id=agent, event_id=event.id, session_id=session_id, byte_start=0,
                       byte_end=len(event.content), text=event.content.decode() + "\n", num_tokens=8, head_dim=1,
                       keys=b"\0\0", values=b"\0\0") for event in said]
        db.add_all(rows)
        db.flush()
        ids = [row.id for row in rows]
    imported = _store(sessions, agent, ["Imported: the blue locker is by the pool."])[0]
    with sessions() as db:
        everything = lexical_search(db, agent_id=agent, text_="blue locker code", limit=10)
        told = lexical_search(db, agent_id=agent, text_="blue locker code", limit=10, told_only=True)
    assert {hit.memory_id for hit in everything} == {*ids, imported}
    # The question (its text ends in "?" before the newline) and both replies are left out.
    assert {hit.memory_id for hit in told} == {ids[2], imported}
