"""LoCoMo through the service's own code paths: `python -m bench.locomo --json --data PATH/locomo10.json`.

LoCoMo (Maharana et al., ACL 2024; `snap-research/LoCoMo`, CC BY-NC 4.0: given by path, never downloaded
nor committed) holds ten long conversations between two people over dated sessions, and questions about
them: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial (the answer is not in the
conversation). For each conversation chosen, a new agent on the default base (or `--base`), on SQLite in a
temporary directory, in one process (no HTTP, no broker; the same functions the routes and the worker call):
- each session is uploaded as a document of its own ("1:56 pm on 8 May, 2023" on its first line, then one
  "Speaker: text" line per turn, a shared photo as its caption) and learned (`learn_through`, the worker's
  function);
- each question is asked in a new chat session (`AgentRuntime.chat`, greedy): LoCoMo's token F1 per category
  (its own scorer: its normalisation, Porter stems, category 1 per comma-separated part), and for category 5
  whether the reply says it does not know (`says_it_does_not_know`);
- `memories recall` with each question, top 5 (`memory.recall`): the share of its evidence turns among the
  memories returned (a turn counts where a memory holds its first or last 48 bytes), for the fused ranking,
  the model's search alone and the words alone; and BM25 over the conversation's single turns, given as many
  of its best turns as fit in the bytes the fused five returned;
- `--plain`: bench.talk's 20 plain questions asked of a new agent with nothing in memory and of this one, once
  it holds the conversation.

Needs `pip install -e '.[eval]'` (LoCoMo's stemmer, BM25). `--reuse DIR` keeps each conversation's learned
database and starts from that copy on a later run with the same base (learning a conversation takes minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import statistics
import string
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nltk.stem import PorterStemmer
from rank_bm25 import BM25Okapi
from sqlalchemy import func, select

from bench.local_agent import LocalAgent, local_agent
from bench.talk import FACTS as PLAIN_QUESTIONS
from learner.base import default_base
from learner.learn import LearnerCache, learn_through
from memory.eventlog import append_document_chunks, create_session, finish_document, open_document
from memory.lexical import STOP_WORDS, lexical_search
from memory.recall import recall
from memory.schema import Agent, Event, Memory
from models import SamplingConfig

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
TOP_K = 5
EVIDENCE_PROBE_BYTES = 48
GREEDY = SamplingConfig(temperature=0.0, max_tokens=48)
# How a reply says it does not know (category 5): LoCoMo's own two phrases, and the ways a chat model says so.
DOES_NOT_KNOW = re.compile(
    r"no information available|not mentioned|(do not|don't|doesn't|does not|didn't|did not) (know|say|mention)|"
    r"not (sure|certain|aware)|no (record|mention|information)|(can't|cannot|couldn't) (find|recall|tell|say)|"
    r"i have no|unknown", re.IGNORECASE)
_stemmer = PorterStemmer()
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Turn:
    dia_id: str
    line: str  # "Speaker: text" as the session's document holds it


@dataclass(frozen=True)
class Conversation:
    index: int
    sessions: list[tuple[str, list[Turn]]]  # (date and time, turns), in order
    questions: list[dict]


def load(path: Path, index: int) -> Conversation:
    sample = json.loads(path.read_text())[index]
    talk = sample["conversation"]
    numbers = sorted(int(key.split("_")[1]) for key in talk if re.fullmatch(r"session_\d+", key))
    sessions = []
    for number in numbers:
        turns = []
        for turn in talk[f"session_{number}"]:
            text = turn["text"] + (f" [shares a photo of {turn['blip_caption']}]" if turn.get("blip_caption") else "")
            turns.append(Turn(turn["dia_id"], f"{turn['speaker']}: {text}"))
        sessions.append((talk[f"session_{number}_date_time"], turns))
    return Conversation(index, sessions, sample["qa"])


def session_document(date: str, turns: list[Turn]) -> bytes:
    return (date + "\n" + "\n".join(turn.line for turn in turns) + "\n").encode()


# -- LoCoMo's scorer (task_eval/evaluation.py), as it is: its normalisation, Porter stems -----------------------

def normalize_answer(text: str) -> str:
    text = text.replace(",", "").lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the|and)\b", " ", text)
    return " ".join(text.split())


def f1_score(prediction: str, truth: str) -> float:
    predicted = [_stemmer.stem(w) for w in normalize_answer(prediction).split()]
    expected = [_stemmer.stem(w) for w in normalize_answer(truth).split()]
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall_ = same / len(predicted), same / len(expected)
    return 2 * precision * recall_ / (precision + recall_)


def question_f1(reply: str, answer: str, category: int) -> float:
    """LoCoMo's score of one reply: category 1 averages each comma-separated part's best match."""
    if category == 3:
        answer = answer.split(";")[0].strip()
    if category == 1:
        replies = [p.strip() for p in reply.split(",")]
        return statistics.mean(max(f1_score(r, part.strip()) for r in replies) for part in answer.split(","))
    return f1_score(reply, answer)


def says_it_does_not_know(reply: str) -> bool:
    return DOES_NOT_KNOW.search(reply) is not None


# -- evidence -------------------------------------------------------------------------------------------------

def holds_turn(text: str, turn: Turn) -> bool:
    """Whether a memory's text holds the turn: its first or last bytes (a turn may straddle two memories)."""
    line = turn.line.encode()
    probes = {line[:EVIDENCE_PROBE_BYTES], line[-EVIDENCE_PROBE_BYTES:]}
    data = text.encode()
    return any(probe.decode("utf-8", errors="ignore") in text for probe in probes if probe) or line in data


def evidence_share(texts: list[str], evidence: list[Turn]) -> float:
    return sum(any(holds_turn(text, turn) for text in texts) for turn in evidence) / len(evidence)


class TurnBM25:
    """BM25 (Okapi, rank-bm25) over single turns, with memory.lexical's words (the same words, stemmed)."""

    def __init__(self, turns: list[Turn]):
        self.turns = turns
        self.index = BM25Okapi([self._words(turn.line) for turn in turns])

    @staticmethod
    def _words(text: str) -> list[str]:
        """Every word but function words (memory.lexical's), stemmed, repeats kept (BM25 counts them)."""
        return [_stemmer.stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS] or ["\0"]

    def within(self, question: str, budget: int) -> list[Turn]:
        """The best turns for `question` that fit in `budget` bytes, best first."""
        scores = self.index.get_scores(self._words(question))
        chosen, used = [], 0
        for i in sorted(range(len(self.turns)), key=lambda i: -scores[i]):
            size = len(self.turns[i].line.encode())
            if used + size > budget:
                break
            chosen.append(self.turns[i])
            used += size
        return chosen


# -- the run ----------------------------------------------------------------------------------------------------

def _upload_and_learn(agent: LocalAgent, conversation: Conversation, chunk_bytes: int) -> float:
    """Every session as a document, learned; returns the seconds learning took."""
    with agent.sessions.begin() as db:
        for number, (date, turns) in enumerate(conversation.sessions, 1):
            content = session_document(date, turns)
            document, stream = open_document(db, agent_id=agent.agent_id, name=f"session {number} ({date})")
            chunks = [content[i: i + chunk_bytes] for i in range(0, len(content), chunk_bytes)]
            append_document_chunks(db, document_id=document.id, session_id=stream.id, chunks=chunks)
            finish_document(db, agent_id=agent.agent_id, document_id=document.id)
        last = db.scalar(select(func.max(Event.id)).where(Event.agent_id == agent.agent_id))
    started, cache = time.perf_counter(), LearnerCache(agent.sessions)
    while True:
        report = learn_through(agent.sessions, cache, agent_id=agent.agent_id, event_id=last, max_events=64)
        if not report.event_ids:
            break
        print(f"[locomo] learned {len(report.event_ids)} events", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def _ask(agent: LocalAgent, runtime, question: str) -> tuple[str, float]:
    with agent.sessions.begin() as db:
        session_id = create_session(db, agent_id=agent.agent_id).id
    result = runtime.chat(session_id=session_id, content=question.encode(), sampling=GREEDY)
    return result.reply.decode("utf-8", errors="replace"), result.first_byte_ms


def _plain(agent: LocalAgent, runtime=None) -> float:
    """The share of bench.talk's plain questions answered right, each in a new session."""
    runtime = runtime or agent.runtime()
    right = 0
    for question, answers in PLAIN_QUESTIONS:
        reply, _ = _ask(agent, runtime, question)
        right += any(re.search(rf"\b{re.escape(a)}\b", reply.lower()) for a in answers)
    return right / len(PLAIN_QUESTIONS)


def run_conversation(conversation: Conversation, base: str, directory: Path, reuse: Path | None,
                     questions: int, answers: bool, plain: bool) -> dict:
    kept = reuse / f"{base.replace('/', '_')}-conversation-{conversation.index}.db" if reuse else None
    reused = kept is not None and kept.exists()
    name = f"locomo-{conversation.index}"
    with local_agent(directory, base, name=name, copy_of=kept if reused else None) as agent:
        out: dict = {"conversation": conversation.index, "learn_s": None}
        if not reused:
            out["learn_s"] = round(_upload_and_learn(agent, conversation, agent.settings.chunk_bytes), 1)
            if kept is not None:
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(agent.path, kept)
        if plain:  # the same questions of an agent on the same base with nothing in memory, in the same database
            with agent.sessions.begin() as db:
                fresh = Agent(name=f"{name}-fresh", base_checkpoint=base, learning_settings={})
                db.add(fresh)
                db.flush()
                fresh_id = fresh.id
            out["plain_fresh"] = _plain(dataclasses.replace(agent, agent_id=fresh_id))
        runtime = agent.runtime()
        model = runtime.serving.current().model
        turns = {turn.dia_id: turn for _, session in conversation.sessions for turn in session}
        bm25 = TurnBM25(list(turns.values()))
        asked = [q for q in conversation.questions if q["category"] in CATEGORIES][: questions or None]
        rows = []
        for number, qa in enumerate(asked):
            question, category = qa["question"], qa["category"]
            evidence = [turns[e] for e in qa.get("evidence", []) if e in turns]
            row: dict = {"category": category}
            if evidence and category != 5:
                runtime.store.catch_up()
                with agent.sessions() as db:
                    fused = recall(db, store=runtime.store, model=model, text=question, limit=TOP_K)
                    alone = recall(db, store=runtime.store, model=model, text=question, limit=TOP_K, lexical=False)
                    words = lexical_search(db, agent_id=agent.agent_id, text_=question, limit=TOP_K)
                    word_texts = [db.get(Memory, hit.memory_id).text for hit in words]
                budget = sum(len(hit.text.encode()) for hit in fused)
                row.update(fused=evidence_share([h.text for h in fused], evidence),
                           model=evidence_share([h.text for h in alone], evidence),
                           words=evidence_share(word_texts, evidence),
                           bm25=evidence_share([t.line for t in bm25.within(question, budget)], evidence),
                           bytes=budget)
            if answers:
                reply, first_byte_ms = _ask(agent, runtime, question)
                row.update(reply=reply, first_byte_ms=first_byte_ms)
                if category == 5:
                    row["does_not_know"] = says_it_does_not_know(reply)
                else:
                    row["f1"] = question_f1(reply, str(qa["answer"]), category)
            rows.append(row)
            print(f"[locomo] {conversation.index}:{number} {category} {question!r} -> "
                  f"{row.get('reply', '')[:80]!r} f1={row.get('f1')} fused={row.get('fused')} bm25={row.get('bm25')}",
                  file=sys.stderr, flush=True)
        if plain:
            out["plain_after"] = _plain(agent, runtime)
        out.update(summarise(rows))
        out["replies"] = [{k: v for k, v in r.items() if k in ("category", "reply", "f1")} for r in rows[:10]]
        return out


def _mean(values: list[float]) -> float | None:
    return round(statistics.mean(values), 4) if values else None


def summarise(rows: list[dict]) -> dict:
    scored = [r for r in rows if "f1" in r]
    retrieved = [r for r in rows if "fused" in r]
    out = {
        "questions": len(rows),
        "f1_overall": _mean([r["f1"] * 100 for r in scored]),
        "f1_by_category": {CATEGORIES[c]: _mean([r["f1"] * 100 for r in scored if r["category"] == c])
                           for c in (1, 2, 3, 4)},
        "adversarial_says_it_does_not_know": _mean([float(r["does_not_know"]) for r in rows if "does_not_know" in r]),
        "evidence_recall_at_5": {signal: _mean([r[signal] for r in retrieved])
                                 for signal in ("fused", "model", "words", "bm25")},
        "evidence_questions": len(retrieved),
        "recalled_bytes_mean": _mean([r["bytes"] for r in retrieved]),
        "first_byte_ms_p50": _mean([statistics.median([r["first_byte_ms"] for r in rows if "first_byte_ms" in r])])
        if any("first_byte_ms" in r for r in rows) else None,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.locomo", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="LoCoMo's data/locomo10.json")
    parser.add_argument("--conversations", default="0", help="comma-separated indexes (0-9)")
    parser.add_argument("--questions", type=int, default=0, help="the first N questions of each (0: all)")
    parser.add_argument("--base", default=None, help="the agents' base (default: the default base)")
    parser.add_argument("--no-answers", action="store_true", help="retrieval only: ask nothing through chat")
    parser.add_argument("--plain", action="store_true", help="plain questions before the uploads and after")
    parser.add_argument("--reuse", type=Path, default=None, help="keep and reuse each conversation's learned db")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"bench.locomo: no such file: {args.data}", file=sys.stderr)
        return 2
    base = args.base or default_base()
    results = []
    for index in (int(i) for i in args.conversations.split(",")):
        conversation = load(args.data, index)
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run_conversation(conversation, base, Path(tmp), args.reuse, args.questions,
                                            not args.no_answers, args.plain))
    report = {"benchmark": "locomo", "base": base, "top_k": TOP_K, "conversations": results}
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
