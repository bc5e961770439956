"""Inspection functions: pagination and filters, provenance, recall, deletes, export/import."""

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
import torch
from sqlalchemy import select

from agent.pagination import keyset_page
from memory.admin import delete_memories, export_ndjson, get_memory, import_ndjson, memories_query
from memory.ids import split_ids
from memory.recall import recall
from memory.schema import Event, Memory, StreamSession
from memory.store import MemoryStore, Span
from models import HybridLM, ModelConfig
from models.memory import nothing_follows


@pytest.fixture
def model() -> HybridLM:
    """A tiny model whose retrieval queries equal its keys, so a text recalls its own stored chunk best."""
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    block = model.retrieval_block
    heads, dim = block.heads, block.head_dim
    with torch.no_grad():
        weight = block.qkv.weight  # (width, H*D + 2D): [q heads | k | v]
        weight[:, : heads * dim] = weight[:, heads * dim : heads * dim + dim].repeat(1, heads)
    return model


def read_into_memory(model: HybridLM, store: MemoryStore, text: bytes, **provenance) -> list[int]:
    """What the learner will do: run the text, store each chunk's retrieval pairs."""
    spans, state = [], model.init_state(1)
    with torch.no_grad():
        for start in range(0, len(text), 64):
            piece = text[start : start + 64]
            out = model(torch.tensor([list(piece)]), state)
            state = out.state
            spans.append(Span(keys=out.memory_kv.keys[0], values=out.memory_kv.values[0], text=piece,
                              byte_start=start, byte_end=start + len(piece), **provenance))
    return store.add_spans(spans)


@pytest.fixture
def agent_with_memories(sessions, make_agent, model):
    agent = make_agent("ada")
    with sessions.begin() as db:
        session = StreamSession(agent_id=agent, kind="chat")
        db.add(session)
        db.flush()
        event = Event(agent_id=agent, session_id=session.id, seq=0, role="user", content=b"x", byte_offset=0)
        db.add(event)
        db.flush()
        session_id, event_id = session.id, event.id
    store = MemoryStore(agent_id=agent, sessions=sessions, head_dim=model.config.head_dim)
    first = read_into_memory(
        model,
        store,
        (
            b"The passkey is 52817. Remember it well: the archive door opens only for it, "
            b"and the keeper at the gate asks for nothing else before dawn."
        ),
        event_id=event_id,
        session_id=session_id,
    )
    second = read_into_memory(
        model, store, b"def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n" * 2
    )
    return agent, store, first, second, event_id, session_id


def test_pages_follow_the_cursor_newest_first(sessions, agent_with_memories):
    agent, _, first, second, _, _ = agent_with_memories
    seen, cursor = [], None
    with sessions() as db:
        while True:
            rows, cursor = keyset_page(db, memories_query(agent_id=agent), Memory.id, cursor=cursor, limit=2,
                                       newest_first=True)
            seen += [m.id for m in rows]
            if cursor is None:
                break
    assert seen == sorted(first + second, reverse=True)


def test_filters_by_source_text_and_time(sessions, agent_with_memories):
    agent, _, first, second, event_id, session_id = agent_with_memories

    def ids(**filters) -> set[int]:
        with sessions() as db:
            return set(db.scalars(select(Memory.id).where(Memory.id.in_(
                memories_query(agent_id=agent, **filters).with_only_columns(Memory.id)))))

    assert ids(event_id=event_id) == set(first)
    assert ids(session_id=session_id) == set(first)
    assert ids(text_contains="fibonacci") <= set(second)
    assert ids(text_contains="100%_not_there") == set()
    future = datetime.now(UTC) + timedelta(hours=1)
    assert ids(created_after=future) == set()
    assert ids(created_before=future) == set(first + second)


def test_get_shows_provenance_and_is_scoped_to_the_agent(sessions, make_agent, agent_with_memories):
    agent, _, first, _, event_id, session_id = agent_with_memories
    other = make_agent("eve")
    with sessions() as db:
        memory = get_memory(db, agent_id=agent, memory_id=first[0])
        assert (memory.event_id, memory.session_id, memory.byte_start, memory.byte_end) == (event_id, session_id, 0, 64)
        assert memory.text.startswith("The passkey is 52817")
        assert get_memory(db, agent_id=other, memory_id=first[0]) is None


def test_recall_returns_what_the_retrieval_layer_fetches(sessions, model, agent_with_memories):
    agent, store, first, _, event_id, session_id = agent_with_memories
    with sessions() as db:
        first_chunk = get_memory(db, agent_id=agent, memory_id=first[0]).text
        store.catch_up()
        hits = recall(db, store=store, model=model, text=first_chunk)
    assert hits[0].memory_id == first[0]  # read from a fresh stream, as it was stored: its queries are its keys
    assert hits[0].model_score == pytest.approx(1.0, abs=1e-2)
    assert all(a.score >= b.score for a, b in pairwise(hits))
    assert hits[0].text == first_chunk
    assert (hits[0].event_id, hits[0].document_id, hits[0].session_id) == (event_id, None, session_id)


class SearchMisses(MemoryStore):
    """A store whose search never finds the pairs of some rows (an approximate index's misses)."""

    def __init__(self, *args, missed_rows=(), can_follow=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.missed_rows, self.can_follow = list(missed_rows), can_follow

    def search(self, queries, top_k):
        found = super().search(queries, top_k)
        rows, _ = split_ids(found.ids.clamp(min=0).numpy())
        missed = torch.isin(torch.from_numpy(rows), torch.tensor(self.missed_rows)) & found.mask
        return found._replace(mask=found.mask & ~missed, ids=found.ids.masked_fill(missed, -1))

    def follow(self, ids):
        return super().follow(ids) if self.can_follow else nothing_follows(ids, self.head_dim)


@pytest.mark.parametrize("can_follow", [True, False])
def test_recall_lists_the_memories_reached_by_following_the_stored_text(
    sessions, model, agent_with_memories, can_follow
):
    agent, store, first, _, _, _ = agent_with_memories
    with sessions() as db:
        passage = b"".join(get_memory(db, agent_id=agent, memory_id=i).text.encode() for i in first)
        missing = SearchMisses(
            agent_id=agent, sessions=sessions, head_dim=store.head_dim, missed_rows=[first[1]], can_follow=can_follow
        )
        missing.catch_up()
        hits = {hit.memory_id: hit for hit in recall(db, store=missing, model=model, text=passage, lexical=False)}
    assert len(first) >= 2 and first[0] in hits  # found by search
    if can_follow:  # the passage is read on from the first row into the second, which search never finds
        assert hits[first[1]].model_score == pytest.approx(1.0, abs=1e-2)
        assert hits[first[1]].token_hits >= model.retrieval_block.follow_hops
    else:
        assert first[1] not in hits


def test_delete_by_source_and_all_removes_from_recall(sessions, model, agent_with_memories):
    agent, store, first, second, event_id, _ = agent_with_memories
    with sessions.begin() as db:
        assert delete_memories(db, agent_id=agent, event_id=event_id) == len(first)
    store.catch_up()
    with sessions() as db:
        hits = recall(db, store=store, model=model, text="The passkey is 52817. Remember it well.")
        assert not {h.memory_id for h in hits} & set(first)
        with pytest.raises(ValueError, match="exactly one"):
            delete_memories(db, agent_id=agent)
    with sessions.begin() as db:
        assert delete_memories(db, agent_id=agent, everything=True) == len(second)
    store.catch_up()
    assert len(store) == 0


def test_export_then_import_into_a_fresh_agent_searches_identically(sessions, make_agent, model, agent_with_memories):
    agent, store, *_ = agent_with_memories
    with sessions() as db:
        lines = list(export_ndjson(db, agent_id=agent))
    fresh = MemoryStore(agent_id=make_agent("copy"), sessions=sessions, head_dim=store.head_dim)
    with sessions.begin() as db:
        assert import_ndjson(db, store=fresh, lines=lines) == len(lines)
    fresh.catch_up()  # the rows joined the caller's transaction: they enter RAM at the catch-up after it commits
    queries = torch.nn.functional.normalize(
        torch.randn(1, 50, 2, store.head_dim, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    original, copied = store.search(queries, 8), fresh.search(queries, 8)
    assert torch.equal(original.mask, copied.mask)
    assert torch.equal(original.keys, copied.keys) and torch.equal(original.values, copied.values)
    with sessions() as db:
        imported = db.scalars(memories_query(agent_id=fresh.agent_id)).first()
    assert imported.imported_from.startswith(f"agent {agent} memory ")


def test_a_bad_import_line_names_itself_and_writes_nothing(sessions, make_agent, agent_with_memories):
    agent, store, *_ = agent_with_memories
    with sessions() as db:
        lines = list(export_ndjson(db, agent_id=agent))[:3]
    fresh = MemoryStore(agent_id=make_agent("copy"), sessions=sessions, head_dim=store.head_dim)
    with pytest.raises(ValueError, match="import line 3"), sessions.begin() as db:
        import_ndjson(db, store=fresh, lines=[lines[0], lines[1], '{"format": 1}'])
    fresh.catch_up()
    assert len(fresh.search(torch.ones(1, 1, 1, store.head_dim), 4).mask.nonzero()) == 0
    with sessions() as db:
        assert db.scalars(memories_query(agent_id=fresh.agent_id)).all() == []


@pytest.mark.parametrize("bad", ["[1,2]", "5", "null", '"text"', '{"format": 1, "text": 5}',
                                 "[" * 100_000 + "]" * 100_000, '{"format": 1, "byte_start": 18446744073709551616}',
                                 "{not json"])
def test_every_kind_of_bad_import_line_is_a_value_error_naming_it(sessions, make_agent, agent_with_memories, bad):
    agent, store, *_ = agent_with_memories
    with sessions() as db:
        good = next(iter(export_ndjson(db, agent_id=agent)))
    fresh = MemoryStore(agent_id=make_agent("copy"), sessions=sessions, head_dim=store.head_dim)
    with pytest.raises(ValueError, match="import line 2: ") as raised, sessions.begin() as db:
        import_ndjson(db, store=fresh, lines=[good, bad])
    assert len(str(raised.value)) < 2000  # a sentence, not a dump
    with sessions() as db:
        assert db.scalars(memories_query(agent_id=fresh.agent_id)).all() == []


def test_an_import_naming_its_source_with_a_nul_is_refused_by_name(sessions, make_agent, agent_with_memories):
    """PostgreSQL text cannot hold NUL: refused while reading the line, not by the database at commit."""
    agent, store, *_ = agent_with_memories
    with sessions() as db:
        line = json.loads(next(iter(export_ndjson(db, agent_id=agent))))
    fresh = MemoryStore(agent_id=make_agent("copy"), sessions=sessions, head_dim=store.head_dim)
    with pytest.raises(ValueError, match="import line 1: imported_from"), sessions.begin() as db:
        import_ndjson(db, store=fresh, lines=[json.dumps({**line, "imported_from": "a\x00b"})])
