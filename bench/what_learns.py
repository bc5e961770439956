"""What should learn, judged on what the model then says: `python -m bench.what_learns --json`.

Each arm starts from the default base (or `--base`) and learns, with the worker's `OnlineLearner`, its step
and anchoring, event by event as the worker reads them (`memory.stream_format`, replies read but not targets):
1. a seeded chat life (bench.lifetime_script: its user turns, and the base's greedy replies to them);
2. a document (licence prose, about 6 KB) with six facts of our own written into its paragraphs.
Then, with no memory at all (so only the weights speak), greedy:
- plain: bench.talk's 20 held-out questions answered, each in a new chat;
- gate: learner.gate's probe (8 other questions, degenerate replies of its 6-turn exchange, bits of its text);
- future_chat_bpb: the life's next user turns as the model reads them in a chat;
- facts_answered: the document's facts asked in a new chat (what the weights learned, memory deleted);
- fact_answer_bpb: bits per byte of each fact's sentence as the reply to its question (lower: the weights
  moved towards the fact even where the greedy reply does not say it).
Arms (`--arms`, each LEARNS:RATE:PASSES): `off` (nothing learns), `norms` (the service's choice: norm scales
above the memory layers), `lora8` (rank-8 adapters on every projection above the memory layers,
models.adapters); PASSES: how many times the document is read (the life once).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from bench.lifetime import FUTURE_TURNS
from bench.lifetime_script import life
from bench.talk import FACTS as PLAIN_QUESTIONS
from learner.base import IMPORTED_LEARNING_RATE, default_base, load_base
from learner.evaluate import user_turn_bits_per_byte
from learner.gate import answered, probe, reply_to
from learner.online import Chunk, LearningConfig, OnlineLearner, step_tokens, stream_chunks
from memory.schema import Event
from memory.stream_format import EventReading, event_reading_tokens
from models import LanguageModel, SamplingConfig

LICENCE = Path("/usr/share/common-licenses/Apache-2.0")
# (sentence written into the document, question, accepted answers): made up for this benchmark.
PLANTED = [
    ("The Harlow Trust keeps its ledgers in a vault whose code is 4471.",
     "What is the code of the Harlow Trust's vault?", ["4471"]),
    ("The founder of the Harlow Trust, Miriam Okafor, was born in the port town of Kilwick.",
     "Where was Miriam Okafor born?", ["kilwick"]),
    ("Every year on the ninth of March the Harlow Trust plants a cedar tree.",
     "What tree does the Harlow Trust plant every year?", ["cedar"]),
    ("The boat of the Harlow Trust is named the Silver Heron.",
     "What is the name of the Harlow Trust's boat?", ["heron"]),
    ("The reading room of the Harlow Trust is painted saffron yellow.",
     "What colour is the Harlow Trust's reading room?", ["saffron"]),
    ("The accountant of the Harlow Trust is a man called Bertrand Vale.",
     "Who is the Harlow Trust's accountant?", ["bertrand", "vale"]),
]
REPLY = SamplingConfig(temperature=0.0, max_tokens=40)
DOCUMENT_CHUNK_BYTES = 2048  # as the service splits an upload (LIFELONG_CHUNK_BYTES)
CHUNK_TOKENS = 512


def planted_document(num_bytes: int = 6144) -> bytes:
    """Licence paragraphs with PLANTED's sentences written into them, spread through the middle."""
    paragraphs = [p for p in LICENCE.read_text().split("\n\n") if len(p) > 200]
    text, planted = [], 0
    for number, paragraph in enumerate(paragraphs):
        if sum(len(p) for p in text) > num_bytes and planted == len(PLANTED):
            break
        if number % 2 == 1 and planted < len(PLANTED):
            sentences = paragraph.split(". ")
            sentences.insert(len(sentences) // 2, PLANTED[planted][0].rstrip("."))
            paragraph, planted = ". ".join(sentences), planted + 1
        text.append(paragraph)
    if planted < len(PLANTED):
        raise SystemExit(f"{LICENCE} has too few paragraphs for {len(PLANTED)} facts")
    return "\n\n".join(text).encode()


def life_events(model: LanguageModel, turns: int, seed: int) -> tuple[list[list[Event]], list[str]]:
    """The life's sessions as events (the user's turns and the base's greedy replies), and its next turns."""
    sessions, future = [], []
    plan = life(turns + FUTURE_TURNS, seed)
    count = 0
    for session in plan:
        events: list[Event] = []
        for text in session.turns:
            if count >= turns:
                future.append(text)
                continue
            events.append(Event(role="user", content=text.encode(), seq=len(events), document_id=None, byte_offset=0))
            reply = reply_to(model, [(e.role, e.content) for e in events], REPLY)
            events.append(Event(role="assistant", content=reply.encode(), seq=len(events), document_id=None,
                                byte_offset=0))
            count += 1
        if events:
            sessions.append(events)
    return sessions, future[:FUTURE_TURNS]


def document_events(data: bytes) -> list[Event]:
    return [Event(role="document", content=data[start : start + DOCUMENT_CHUNK_BYTES], seq=number, document_id=1,
                  byte_offset=start) for number, start in enumerate(range(0, len(data), DOCUMENT_CHUNK_BYTES))]


def learn_stream(model: LanguageModel, learner: OnlineLearner, events: list[Event]) -> None:
    """One stream's events, each read and (unless a reply) learned, as `learner.learn.learn_events` does."""
    state, last = model.init_state(1), None
    for event in events:
        reading = EventReading.after(event, last, model.tokenizer)
        for inputs, targets in stream_chunks(torch.tensor([reading.tokens]), step_tokens(model, CHUNK_TOKENS)):
            state = learner.step(Chunk(inputs, targets, state), learn=learner.learns_from(event.role)).state
        last = reading.tokens[-1]


@torch.no_grad()
def reply_bits_per_byte(model: LanguageModel, question: str, reply: str) -> float:
    """Bits per byte of `reply` as the assistant's answer to `question`, in a new chat."""
    tokens: list[int] = []
    scored: list[bool] = []
    for seq, (role, text) in enumerate((("user", question), ("assistant", reply))):
        event = Event(role=role, content=text.encode(), seq=seq, document_id=None)
        read, lengths = event_reading_tokens(event, model.tokenizer, starts_stream=seq == 0)
        tokens += read
        scored += [role == "assistant" and length > 0 for length in lengths]
    inputs = torch.tensor([[model.tokenizer.chat.chat_start[0], *tokens[:-1]]])
    log_probs = model(inputs, model.init_state(1)).log_probs[0]
    mask = torch.tensor(scored)
    bits = -log_probs[mask].gather(-1, torch.tensor(tokens)[mask, None]).sum().item() / math.log(2)
    return bits / len(reply.encode())


def run_arm(base: LanguageModel, spec: str, sessions: list[list[Event]], document: list[Event],
            future: list[str]) -> dict:
    learns, rate, passes = spec.split(":")
    model = copy.deepcopy(base)
    started = time.perf_counter()
    if learns != "off":
        config = LearningConfig(learning_rate=float(rate))
        if learns.startswith("lora"):  # the service's adapters (models.adapters), of this rank
            config = dataclasses.replace(config, trainable="adapters", adapter_rank=int(learns.removeprefix("lora")))
        learner = OnlineLearner(model, config)
        for events in sessions:
            learn_stream(model, learner, events)
        for _ in range(int(passes)):
            learn_stream(model, learner, document)
    learned_s = time.perf_counter() - started
    model.eval()
    with torch.inference_mode():
        plain = [answered(reply_to(model, [("user", q.encode())], REPLY), a) for q, a in PLAIN_QUESTIONS]
        facts = [reply_to(model, [("user", q.encode())], REPLY) for _, q, _ in PLANTED]
        scores = probe(model)
        fact_bits = [reply_bits_per_byte(model, q, sentence) for sentence, q, _ in PLANTED]
        chat_bpb = user_turn_bits_per_byte(model, [turn.encode() for turn in future])
    row = {"arm": spec, "learned_s": round(learned_s, 1), "plain": sum(plain) / len(plain),
           "gate": scores.as_dict(), "future_chat_bpb": round(chat_bpb, 4),
           "facts_answered": sum(answered(r, a) for r, (_, _, a) in zip(facts, PLANTED)),
           "fact_answer_bpb": round(sum(fact_bits) / len(fact_bits), 4), "fact_replies": facts}
    print(f"[what_learns] {({k: v for k, v in row.items() if k != 'fact_replies'})}", file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="an imported base (default: the default base)")
    parser.add_argument("--turns", type=int, default=60, help="user turns of the life learned first")
    parser.add_argument("--seed", type=int, default=0, help="the life's seed")
    parser.add_argument("--arms", default=f"off:0:1,norms:{IMPORTED_LEARNING_RATE}:1,norms:{IMPORTED_LEARNING_RATE}:3,"
                        "lora8:1e-4:1,lora8:3e-4:1,lora8:3e-4:3",
                        help="comma-separated LEARNS:RATE:PASSES, LEARNS one of off, norms, loraRANK")
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    for spec in arms:
        parts = spec.split(":")
        if len(parts) != 3 or not (parts[0] in ("off", "norms") or parts[0].removeprefix("lora").isdigit()):
            parser.error(f"each arm is LEARNS:RATE:PASSES with LEARNS off, norms or loraRANK, got {spec!r}")
    name = args.base or default_base()
    base = load_base(name)
    if not base.capabilities.pretrained:
        raise SystemExit(f"{name} is not an imported model")
    sessions, future = life_events(base, args.turns, args.seed)
    document = document_events(planted_document())
    rows = [run_arm(base, spec, sessions, document, future) for spec in arms]
    report = {"base": name, "turns": args.turns, "seed": args.seed,
              "document_bytes": sum(len(e.content) for e in document), "arms": rows}
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
