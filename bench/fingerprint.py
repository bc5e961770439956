"""Fingerprints of what the model computes, to show that a change of code changes no number:
`python -m bench.fingerprint --json`.

A fixed 64 KB of the standard library's source is read by the shipped `small` checkpoint in 512-token
chunks, with its real memory store (SQLite, FAISS) holding everything read before each chunk, and
then decoded greedily for 128 tokens,
and once more with online learning as the worker does it. Printed: sha256 digests of every chunk's
output scores, of the final streaming state's bytes, of the memory pointer's ids, and of the
learned weights; two runs of the same code print the same object, and so must a refactoring.

With the default imported base installed (SmolLM2), its arm `turns` also serves chat turns through the runtime
as the API does: a fact told in one session, a document read, both learned by the worker's function, then a
question in a new session answered with a note of what it recalls, then learned too. Printed: digests of
the replies (which read the notes), the sessions' states, the memories' text and pairs, and the weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors.torch import load
from sqlalchemy import select, update

from bench.local_agent import local_agent
from bench.local_text import stdlib_text
from learner.base import SMALL, default_base, load_base
from learner.learn import LearnerCache, learn_through
from learner.online import Chunk, LearningConfig, OnlineLearner, stream_chunks
from memory.db import make_engine, make_session_factory
from memory.eventlog import append_document_chunks, create_session, finish_document, open_document
from memory.migrate import upgrade
from memory.schema import Agent, Document, Event, Memory, StreamSession, WeightVersion
from memory.store import MemoryStore, Span
from models import SamplingConfig, Special, State

ROOT = Path(__file__).resolve().parent.parent
TEXT_BYTES = 64 * 1024
CHUNK_TOKENS = 512
DECODE_TOKENS = 128


def _scores(out) -> torch.Tensor:
    """The output's (B, T, V) next-token scores, whatever this version of the code names them."""
    for name in ("log_probs", "logits"):
        if hasattr(out, name):
            return getattr(out, name)
    raise AttributeError("the model output has no next-token scores")


def _state_digest(state) -> str:
    """Of the state's tensors in layer order (its byte format's header may order them differently
    from process to process), and its position."""
    digest = hashlib.sha256(str(state.position).encode())
    for layer in state.layers:
        for tensor in layer:
            digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def _decode(model, state, store, scores: torch.Tensor) -> str:
    """Greedy decoding one token at a time (the decoding path of every block), digesting each step's scores."""
    digest = hashlib.sha256()
    for _ in range(DECODE_TOKENS):
        token = int(scores[:256].argmax())
        out = model(torch.tensor([[token]]), state, store)
        state, scores = out.state, _scores(out)[0, -1]
        digest.update(scores.float().contiguous().numpy().tobytes() + out.pointer.ids.contiguous().numpy().tobytes())
    return hashlib.sha256(digest.digest() + _state_digest(state).encode()).hexdigest()


def _read(model, text: bytes, store: MemoryStore, learner: OnlineLearner | None) -> dict[str, str]:
    scores, pointers = hashlib.sha256(), hashlib.sha256()
    state = model.init_state(1)
    tokens = torch.tensor([[int(Special.BEGIN), *text]])
    position = 0
    for inputs, targets in stream_chunks(tokens, CHUNK_TOKENS):
        store.catch_up()
        if learner is None:
            with torch.no_grad():
                out = model(inputs, state, store)
            state, memory_kv, pointer = out.state, out.memory_kv, out.pointer
            scores.update(_scores(out).float().contiguous().numpy().tobytes())
        else:
            step = learner.step(Chunk(inputs, targets, state), store)
            state, memory_kv, pointer = step.state, step.memory_kv, None
            scores.update(torch.tensor([step.loss], dtype=torch.float64).numpy().tobytes())
        if pointer is not None:
            pointers.update(pointer.ids.contiguous().numpy().tobytes())
        steps = inputs.shape[1]
        store.add_spans([Span(keys=memory_kv.keys[0, s : s + 128], values=memory_kv.values[0, s : s + 128],
                              text=b"", byte_start=position + s, byte_end=position + min(s + 128, steps),
                              session_id=None)
                         for s in range(0, steps, 128)])
        position += steps
    digests = {"scores": scores.hexdigest(), "state": _state_digest(state)}
    if learner is None:
        digests["pointer_ids"] = pointers.hexdigest()
        digests["decode"] = _decode(model, state, store, _scores(out)[0, -1])
    else:
        weights = hashlib.sha256()
        for name, param in sorted(learner.params.items()):
            weights.update(name.encode() + param.detach().float().contiguous().numpy().tobytes())
        digests["learned_weights"] = weights.hexdigest()
    return digests


# A day every dated source of a note reads, whatever day the fingerprint runs on ("you said on 1 May 2026").
FIXED_DAY = datetime(2026, 5, 1, 12, tzinfo=UTC)
TURNS = [  # (session, message): told, then asked in a session of its own
    ("told", "My locker number is 4417, next to the gym. I keep a blue bike helmet in it."),
    ("told", "Thanks! I also have a sister called Oriane who lives in Lyon."),
    ("asked", "What is my locker number?"),
    ("asked", "Where does my sister live?"),
]
DOCUMENT = (b"Field notes. The heron colony on the north bank counted 212 nests this spring. "
            b"The ferry to the island leaves at 7:40 every weekday. The lighthouse keeper is named Albane.\n") * 4


def _turns(base: str) -> dict[str, str]:
    """Chat turns of the imported base through the serving runtime, with learning between them (see above)."""
    greedy = SamplingConfig(temperature=0.0, max_bytes=200)
    replies = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp, local_agent(Path(tmp), base, name="fingerprint-turns") as agent:
        cache = LearnerCache(agent.sessions)
        with agent.sessions.begin() as db:
            document, stream = open_document(db, agent_id=agent.agent_id, name="notes")
            append_document_chunks(db, document_id=document.id, session_id=stream.id,
                                   chunks=[DOCUMENT[i : i + 512] for i in range(0, len(DOCUMENT), 512)])
            finish_document(db, agent_id=agent.agent_id, document_id=document.id)
            sessions = {name: create_session(db, agent_id=agent.agent_id).id for name in ("told", "asked")}
        runtime, last = agent.runtime(), 0
        for name, message in TURNS:
            if name == "asked":  # what was told is learned, and dated the same day whenever this runs
                learn_through(agent.sessions, cache, agent_id=agent.agent_id, event_id=last)
                with agent.sessions.begin() as db:
                    db.execute(update(Event).values(created_at=FIXED_DAY))
                    db.execute(update(Document).values(created_at=FIXED_DAY))
            result = runtime.chat(session_id=sessions[name], content=message.encode(), sampling=greedy)
            last = result.reply_event_id
            replies.update(result.reply + str((result.prompt_tokens, result.reply_tokens, result.stop_reason)).encode())
        learn_through(agent.sessions, cache, agent_id=agent.agent_id, event_id=last)
        with agent.sessions() as db:
            states = hashlib.sha256()
            for blob in db.scalars(select(StreamSession.state).order_by(StreamSession.id)):
                states.update(b"-" if blob is None else _state_digest(State.from_bytes(blob)).encode())
            memories = hashlib.sha256()
            for row in db.execute(select(Memory.text, Memory.keys, Memory.values, Memory.token_start,
                                         Memory.num_tokens).order_by(Memory.id)):
                memories.update(row.text.encode() + row.keys + row.values
                                + str((row.token_start, row.num_tokens)).encode())
            weights = db.scalars(select(WeightVersion.weights).order_by(WeightVersion.version.desc())).first()
    return {"replies": replies.hexdigest(), "states": states.hexdigest(),
            "memories": memories.hexdigest(), "learned_weights": _weights_digest(weights)}


def _weights_digest(blob: bytes) -> str:
    """Of a stored version's tensors by name (not of its bytes: a header may list them in any order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(load(blob).items()):
        digest.update(name.encode() + tensor.float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fingerprint(checkpoint: Path) -> dict:
    torch.manual_seed(0)
    text = stdlib_text(TEXT_BYTES, skip=1 << 20, tests=True)
    result: dict = {"checkpoint": checkpoint.name, "bytes": len(text), "chunk_tokens": CHUNK_TOKENS}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/fingerprint.db"
        upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        for arm, learning in (("retrieval", None), ("both", LearningConfig())):
            with sessions.begin() as db:
                agent = Agent(name=f"fingerprint-{arm}", base_checkpoint=str(checkpoint))
                db.add(agent)
                db.flush()
                agent_id = agent.id
            model = load_base(str(checkpoint), "cpu")
            store = MemoryStore(agent_id=agent_id, sessions=sessions, head_dim=model.config.head_dim)
            learner = None if learning is None else OnlineLearner(model, learning)
            result[arm] = _read(model, text, store, learner)
        engine.dispose()
    base = default_base()
    result["turns"] = _turns(base) if base != SMALL else "skipped: the default imported base is not installed"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "small")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the only output there is)")
    args = parser.parse_args()
    print(json.dumps(fingerprint(args.checkpoint)))


if __name__ == "__main__":
    main()
