"""Every table round-trips on SQLite and PostgreSQL; migrations go up from empty and back down."""

import time
from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from memory.db import make_engine
from memory.migrate import downgrade, upgrade
from memory.schema import (
    Agent,
    ApiKey,
    Base,
    Document,
    Event,
    Memory,
    MemoryTombstone,
    StreamSession,
    WeightVersion,
    declared_here,
)


def test_every_table_round_trips(sessions):
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with sessions.begin() as db:
        agent = Agent(name="ada", base_checkpoint="checkpoints/small", learning_settings={"lr": 1e-4, "params": "all"})
        db.add(agent)
        db.flush()
        session = StreamSession(agent_id=agent.id, kind="chat", state=b"\x00\xffstate", position=12, next_seq=2)
        document = Document(agent_id=agent.id, name="book.txt", status="queued", bytes_received=10, bytes_processed=4)
        db.add_all([session, document, ApiKey(key_hash="ab" * 32, agent_id=agent.id, name="k")])
        db.flush()
        event = Event(agent_id=agent.id, session_id=session.id, seq=0, role="user", content=b"hi \xff", byte_offset=0,
                      learned_at=moment)
        db.add(event)
        db.flush()
        db.add_all(
            [
                Memory(
                    agent_id=agent.id,
                    event_id=event.id,
                    session_id=session.id,
                    byte_start=0,
                    byte_end=4,
                    text="hi \ufffd",
                    num_tokens=2,
                    head_dim=2,
                    keys=b"\x01\x02" * 4,
                    values=b"\x03\x04" * 4,
                    weight_version=3,
                ),
                MemoryTombstone(agent_id=agent.id, memory_id=99),
                WeightVersion(
                    agent_id=agent.id,
                    version=1,
                    parent_version=None,
                    weights=b"overlay",
                    events_learned_through=event.id,
                    tag="good",
                ),
            ]
        )
        ids = (agent.id, session.id, event.id)
    with sessions() as db:
        agent = db.get(Agent, ids[0])
        assert agent.learning_settings == {"lr": 1e-4, "params": "all"}
        assert db.get(StreamSession, ids[1]).state == b"\x00\xffstate"
        event = db.get(Event, ids[2])
        assert (event.content, event.role, event.learned_at) == (b"hi \xff", "user", moment)
        memory = db.scalar(select(Memory))
        assert (memory.keys, memory.values, memory.weight_version, memory.hit_count) == (
            b"\x01\x02" * 4,
            b"\x03\x04" * 4,
            3,
            0,
        )
        assert db.scalar(select(Document)).bytes_processed == 4
        assert db.scalar(select(ApiKey)).key_hash == "ab" * 32
        assert db.scalar(select(MemoryTombstone)).memory_id == 99
        assert db.scalar(select(WeightVersion)).tag == "good"


def test_migration_matches_the_models_and_downgrades_to_nothing(db_url):
    engine = make_engine(db_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"include_name": declared_here}),
                                Base.metadata)
    assert diff == []
    downgrade(db_url, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(db_url)
    assert {"agents", "memories", "memory_tombstones", "weight_versions"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_memory_ids_are_never_reused_after_deleting_the_newest(sessions, make_agent):
    agent_id = make_agent("a")

    def add() -> int:
        with sessions.begin() as db:
            row = Memory(
                agent_id=agent_id,
                byte_start=0,
                byte_end=1,
                text="x",
                num_tokens=1,
                head_dim=1,
                keys=b"\0\0",
                values=b"\0\0",
            )
            db.add(row)
            db.flush()
            return row.id

    first = add()
    with sessions.begin() as db:
        db.delete(db.get(Memory, first))
    assert add() > first


def test_the_events_read_migration_recovers_each_byte_sessions_count(db_url, sessions, make_agent):
    """Sessions stored before 0003 know only their token position; the count of events it covers
    is recovered from the byte models' layout (BEGIN, then marker + bytes + END_OF_TURN per event)."""
    from memory.eventlog import append_events, create_session

    agent_id = make_agent("old")
    with sessions.begin() as db:
        read_all, read_one = create_session(db, agent_id=agent_id).id, create_session(db, agent_id=agent_id).id
        for session_id in (read_all, read_one):
            append_events(db, session_id=session_id, events=[("user", b"hello"), ("assistant", b"hi there")])
        db.get(StreamSession, read_all).position = 1 + (5 + 2) + (8 + 2)
        db.get(StreamSession, read_one).position = 1 + (5 + 2) + 1  # the first turn, then the reply's marker
    downgrade(db_url, "0002")
    upgrade(db_url)
    with sessions() as db:
        assert db.get(StreamSession, read_all).events_read == 2
        assert db.get(StreamSession, read_one).events_read == 1


def test_no_id_is_reused_after_deleting_the_newest_row_of_any_table(sessions, make_agent):
    from memory.eventlog import append_events, create_session

    def newest_agent_then_its_rows() -> tuple[int, int, int]:
        agent_id = make_agent(f"agent-{time.monotonic_ns()}")
        with sessions.begin() as db:
            session_id = create_session(db, agent_id=agent_id).id
            event_id = append_events(db, session_id=session_id, events=[("user", b"hi")])[0].id
        return agent_id, session_id, event_id

    first = newest_agent_then_its_rows()
    with sessions.begin() as db:
        db.delete(db.get(Agent, first[0]))  # its session and event go with it
    second = newest_agent_then_its_rows()
    assert all(new > old for new, old in zip(second, first, strict=True)), (first, second)


def test_the_autoincrement_migration_keeps_every_row_and_reference(db_url, sessions, make_agent):
    from memory.eventlog import append_events, create_session

    agent_id = make_agent("kept")
    with sessions.begin() as db:
        session_id = create_session(db, agent_id=agent_id).id
        append_events(db, session_id=session_id, events=[("user", b"hello"), ("assistant", b"hi")])
    downgrade(db_url, "0004")
    upgrade(db_url)
    with sessions() as db:
        assert db.get(Agent, agent_id).name == "kept"
        assert [event.content for event in db.scalars(select(Event).where(Event.session_id == session_id)
                                                      .order_by(Event.seq))] == [b"hello", b"hi"]


def test_agents_that_learned_before_adapters_keep_learning_their_norms(db_url):
    """Revision 0010: an agent with versions and no `trainable` of its own gets 'downstream' (what its versions
    hold); one without versions, or with its own choice, keeps its settings."""
    downgrade(db_url, "0009")
    engine = make_engine(db_url)
    with engine.begin() as connection:
        agents = {name: connection.execute(Agent.__table__.insert().values(
            name=name, base_checkpoint="small", learning_settings=settings)).inserted_primary_key[0]
            for name, settings in [("learned", {"learning_rate": 1e-4}), ("new", {}),
                                   ("chose", {"trainable": "adapters"})]}
        for name in ("learned", "chose"):
            connection.execute(WeightVersion.__table__.insert().values(
                agent_id=agents[name], version=1, weights=b"", events_learned_through=0))
    upgrade(db_url)
    with engine.connect() as connection:
        settings = dict(connection.execute(select(Agent.name, Agent.learning_settings)).all())
    engine.dispose()
    assert settings == {"learned": {"learning_rate": 1e-4, "trainable": "downstream"}, "new": {},
                        "chose": {"trainable": "adapters"}}
