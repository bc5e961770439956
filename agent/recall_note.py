"""Recall in context: before an imported chat model answers, the memories recalled for the message are read
into its context as a short note opening the message.

Why: a small chat model answers a stated fact from its context far more often than from attending to stored
pairs, while its memory layers' search finds the fact's memory; so the search picks and the context reads
(BENCHMARKS.md, "Recall through chat"). The note is never logged: the turn is re-read without it, so the
session state stays what its log says. It reminds the agent of what it was told, not of its own replies or
earlier questions (BENCHMARKS.md, "Why a note reads what it reads").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.recall import RecallHit, recall
from memory.schema import Document, Event, Memory
from memory.store import MemoryStore
from memory.stream_format import event_tokens
from models import LanguageModel, State
from models.tokenizer import Tokenizer

NOTE_HEADER = "From your memory: "
RECALL_CANDIDATES = 8
# The most a note reads of one memory: a document's memory is a chunk of kilobytes (`excerpt`).
EXCERPT_BYTES = 384
# A session's own turns looked at for the user's statements (bounded), how many of them a note reads, and how a
# note introduces them (BENCHMARKS.md, "A conversation without its own replies").
SESSION_LOOKBACK = 256
SESSION_NOTED = 2
SAID_IN_SESSION = "(the user said) "
# The end of a message is what it asks: recall reads at most this much of it (a 64 KB message would
# otherwise cost a search per token of all of it before the first byte of the answer).
RECALL_QUERY_BYTES = 2048
# Words that say nothing of what is asked; the rest are compared lower-cased, without a final "s", by their
# first STEM letters ("leaves" is "leave", "lives" "live", "numbers" "numbe").
FUNCTION_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "did", "do", "does", "for", "from",
    "had", "has", "have", "he", "her", "his", "how", "i", "if", "in", "is", "it", "its", "me", "my", "of",
    "on", "or", "our", "please", "remember", "she", "so", "tell", "that", "the", "their", "them", "they",
    "this", "to", "us", "was", "we", "were", "what", "when", "where", "which", "who", "whom", "why", "will",
    "with", "would", "you", "your",
})
STEM = 5
# Words of a question a memory found by its words must share to be noted: one common word is not enough evidence
# that it answers (BENCHMARKS.md, "Memory that finds what matters (LoCoMo)").
ENOUGH_SHARED_WORDS = 2
# What a user tells of themselves is asked back in other words: "What do I do for a living?" of "I work as a
# glassblower", "What's my name?" of "Hi! I'm Quentin." A text speaking of one of these shares the concept with
# a question about it, as one word. Only the facts people tell of themselves most (BENCHMARKS.md, "Memory that
# stays out of the way").
CONCEPTS = {
    "name": ("name", "named", "called", "call"),
    "work": ("work", "job", "profession", "occupation", "living", "trade", "career"),
    "age": ("age", "old", "birthday", "born"),
    "home": ("live", "home", "address", "town", "city"),
}
# "I'm Quentin", "I am Dr. Okafor", "call me Ines": a name after words that introduce one.
_SELF_INTRODUCTION = re.compile(r"\b(?:[Ii]['\u2019]m|[Ii] am|[Cc]all me|[Mm]y name's|[Mm]y name is)\s+"
                                r"(?:Dr\.?\s+)?([A-Z][a-z]+)")
_WORD = re.compile(r"\w+")
# A sentence ends at ".", "!" or "?" and a space, but not after a title ("the meeting with Dr. Okafor" was read as
# two sentences, and the note kept the one without the place).
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\bDr\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bMrs\.)(?<!\bSt\.)(?<!\bProf\.)\s+|\n+")


# A message with one of these is about the user (apostrophes dropped: "I'm" is "im"; not "we're", which reads
# as "were"). Only such a question may be answered by a memory sharing none of its words ("What is my address?"
# by "I live at 14 Rue Lamarck"); a question about the world is not: a planned trip, noted for "What is the
# capital of Spain?" because the search weighed it, was answered instead (BENCHMARKS.md, "Memory that stays
# out of the way").
FIRST_PERSON = frozenset({"i", "im", "ive", "me", "my", "mine", "myself", "we", "us", "our", "ours"})
# A message starting with one of these asks something even without its "?" ("tell me my locker number").
ASKING_WORDS = frozenset({
    "am", "are", "can", "could", "did", "do", "does", "give", "how", "is", "list", "recall", "remind", "say",
    "should", "show", "tell", "was", "were", "what", "whats", "when", "where", "which", "who", "whom", "whose",
    "why", "will", "would",
})


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word[:STEM]


_CONCEPT_OF = {_stem(word): f"<{concept}>" for concept, words in CONCEPTS.items() for word in words}


def _stems(text: str, concepts: bool = True) -> set[str]:
    """The stems of `text`'s words that say something: not function words, nor one character (the "s" of
    "sister's", a digit of a code); with `concepts`, a word of a CONCEPTS entry counts as the concept."""
    stems = {_stem(word) for word in _WORD.findall(text.lower()) if len(word) > 1 and word not in FUNCTION_WORDS}
    if not concepts:
        return stems
    stems = {_CONCEPT_OF.get(stem, stem) for stem in stems}
    if _SELF_INTRODUCTION.search(text):
        stems.add(_CONCEPT_OF[_stem("name")])
    return stems


def introduced_names(text: str) -> list[str]:
    """The names `text` introduces someone by ("Hi! I'm Quentin." -> ["Quentin"])."""
    return _SELF_INTRODUCTION.findall(text)


def about_the_user(message: str) -> bool:
    """Whether `message` speaks of the user: it has a first-person word."""
    return not FIRST_PERSON.isdisjoint(_WORD.findall(message.lower().replace("'", "")))


def asks(message: str) -> bool:
    """Whether `message` asks something: it ends with "?" or starts with a word that asks."""
    words = _WORD.findall(message.lower().replace("'", ""))
    return message.rstrip().endswith("?") or (bool(words) and words[0] in ASKING_WORDS)


def asked_sentence_first(text: str, message: str) -> str:
    """`text` with its sentence sharing the most words with `message` first; as it is when none shares one."""
    sentences = [sentence for sentence in _SENTENCE_END.split(text) if sentence.strip()]
    asked = _stems(message)
    shared = [len(asked & _stems(sentence)) for sentence in sentences]
    if len(sentences) < 2 or max(shared) == 0:
        return text
    best = shared.index(max(shared))
    return " ".join([sentences[best], *sentences[:best], *sentences[best + 1:]])


def excerpt(text: str, message: str, max_bytes: int) -> str:
    """What a note reads of a memory: `text` with its asked sentence first (`asked_sentence_first`) when it fits
    in `max_bytes`; else its sentences sharing the most words with `message` that fit, the asked one first and
    the others in the text's order (a document's memory is a chunk of kilobytes, the answer one sentence of
    it); "" when none shares a word: which part of it the search meant cannot be told."""
    if len(text.encode()) <= max_bytes:
        return asked_sentence_first(text, message)
    sentences = [sentence.strip() for sentence in _SENTENCE_END.split(text) if sentence.strip()]
    asked = _stems(message)
    shared = [len(asked & _stems(sentence)) for sentence in sentences]
    if not any(shared):
        return ""
    order = sorted(range(len(sentences)), key=lambda i: (-shared[i], i))
    chosen: list[int] = []
    used = 0
    for i in order:
        if chosen and not shared[i]:
            break
        size = len(sentences[i].encode()) + 1
        if used + size <= max_bytes:
            chosen.append(i)
            used += size
    if not chosen:  # the asked sentence alone is longer than the budget: its start, in whole characters
        return sentences[order[0]].encode()[:max_bytes].decode("utf-8", errors="ignore")
    return " ".join(sentences[i] for i in [chosen[0], *sorted(chosen[1:])])


def worth_noting(hits: Sequence[RecallHit], message: str, min_score: float) -> list[RecallHit]:
    """Of `hits` (best first), those a note reads: each whose model score reaches `min_score`, and the best one
    sharing ENOUGH_SHARED_WORDS of `message`'s words (all when it has fewer) whatever its score. Of those, one
    sharing no word is left out when ranked below one that does, and always when `message` asks nothing
    (`asks`) or is not about the user (`about_the_user`). Why each rule: BENCHMARKS.md, "Why a note reads what
    it reads"."""
    # Concepts are for asking back what people say of themselves in a chat: in a document, "works" is not a job,
    # and told a sister's name, the agent is not reminded of a guide "called Marisol".
    concepts = asks(message)
    asked = _stems(message, concepts)
    enough = min(ENOUGH_SHARED_WORDS, len(asked))
    shares = [len(asked & _stems(hit.text, concepts and hit.document_id is None)) for hit in hits]
    best_sharing = next((rank for rank, shared in enumerate(shares) if shared and shared >= enough), None)
    ranked = [(hit, shared > 0) for hit, shared in zip(hits, shares)]
    noted = [(hit, shared) for rank, (hit, shared) in enumerate(ranked)
             if (hit.model_score or 0.0) >= min_score or rank == best_sharing]
    if not asks(message) or not about_the_user(message):
        return [hit for hit, shared in noted if shared]
    first_sharing = next((rank for rank, (_, shared) in enumerate(noted) if shared), len(noted))
    return [hit for rank, (hit, shared) in enumerate(noted) if shared or rank < first_sharing]


def session_statements(db: Session, *, model: LanguageModel, session_id: int, state: State | None,
                       events_read: int, asked: str, replies_read: bool = True) -> list[str]:
    """What the user told this session, when `asked` asks something: statements sharing words with it, most
    shared first, then the latest; at most SESSION_NOTED. In the model's window as well: a small model answers
    from a statement read again beside the question far more often than from one a few turns back. Out of the
    window, only what is no memory yet (the worker has not learned it: a session outruns a busy worker);
    recall finds the rest. `replies_read`: whether the state read the session's replies (where the window
    starts)."""
    if state is None or not asks(asked):
        return []
    window_start = state.position - model.config.context_tokens
    read = db.scalars(select(Event).where(Event.session_id == session_id, Event.seq < events_read,
                                          Event.forgotten_at.is_(None))
                      .order_by(Event.seq.desc()).limit(SESSION_LOOKBACK))
    wanted, found, end = _stems(asked), [], state.position
    for event in read:  # newest first: each event's place in the stream from its tokens
        if event.role == "assistant" and not replies_read:
            continue
        length = len(event_tokens(event, model.tokenizer, starts_stream=event.seq == 0))
        end, out_of_window = end - length, end <= window_start
        text = event.content.decode("utf-8", errors="replace").strip()
        if event.role == "user" and not text.endswith("?") and not (out_of_window and event.learned_at):
            shared = len(wanted & _stems(text))
            if shared:
                found.append((shared, event.seq, text))
    return [text for _, _, text in sorted(found, reverse=True)[:SESSION_NOTED]]


def recalled_note(db: Session, *, store: MemoryStore, model: LanguageModel, session_id: int, state: State | None,
                  message: bytes, min_score: float, max_bytes: int, events_read: int = 0,
                  message_tokens: list[int] | None = None, replies_read: bool = True) -> list[int]:
    """The tokens of a note of the memories recalled for `message` that are worth noting (`worth_noting`),
    best first, up to `max_bytes` of their text; [] when none qualifies. The session's own memories that its
    state still holds in its window are left out (the model sees those already), and so are memories that
    only repeat the message, the agent's own replies and the questions it was asked before (a user's
    message ending in "?"). The session's own statements sharing its words (`session_statements`, of the
    `events_read` events its state has read) come first."""
    if not model.config.memory_layers or max_bytes <= 0 or not message.strip():
        return []
    asked = message[-RECALL_QUERY_BYTES:].decode("utf-8", errors="ignore")  # whole characters only
    query = asked.encode()
    if not query.strip():
        return []
    own = session_statements(db, model=model, session_id=session_id, state=state, events_read=events_read,
                             asked=asked, replies_read=replies_read)
    hits = recall(db, store=store, model=model, text=query, limit=RECALL_CANDIDATES,
                  tokens=message_tokens if query == message else None, told_only=True)
    if not hits and not own:
        return []
    window_start = (state.position if state is not None else 0) - model.config.context_tokens
    places = select(Memory.id, Memory.session_id, Memory.token_start, Memory.num_tokens)
    rows = {row.id: row for row in db.execute(places.where(Memory.id.in_([hit.memory_id for hit in hits])))}

    def tells_something(hit: RecallHit) -> bool:
        row, text = rows.get(hit.memory_id), hit.text.strip()
        in_window = row is not None and row.session_id == session_id and row.token_start is not None \
            and row.token_start + row.num_tokens > window_start
        return row is not None and not in_window and bool(text) and text.casefold() != asked.strip().casefold()

    texts, read_before, used = [], set(), 0
    noted = worth_noting([hit for hit in hits if tells_something(hit)], asked, min_score)
    sources = sources_of(db, noted)
    for text, source in [*((text, SAID_IN_SESSION) for text in own),
                         *((hit.text.strip(), sources.get(hit.memory_id, "")) for hit in noted)]:
        read = excerpt(text, asked, min(EXCERPT_BYTES, max_bytes - used))
        if read and read.casefold() not in read_before:  # a thing said twice is read once
            texts.append(source + read)
            read_before.add(read.casefold())
            used += len(read.encode())
    if not texts:
        return []
    try:
        return model.tokenizer.encode((NOTE_HEADER + "\n".join(texts) + "\n\n").encode())
    except ValueError:  # a memory's shown text (U+FFFD for bytes it could not show) the vocabulary cannot spell
        return []


def sources_of(db: Session, hits: Sequence[RecallHit]) -> dict[int, str]:
    """Memory id -> where and when it was read, as a note says it before the memory's text: a document's name
    and the day it was uploaded, or the day a chat turn said it ("" for an imported memory)."""
    rows = db.execute(select(Memory.id, Document.name, Document.created_at.label("uploaded"),
                             Event.created_at.label("said"), Event.role)
                      .outerjoin(Document, Document.id == Memory.document_id)
                      .outerjoin(Event, Event.id == Memory.event_id)
                      .where(Memory.id.in_([hit.memory_id for hit in hits])))
    sources = {}
    for row in rows:
        if row.uploaded is not None:
            named = f' "{row.name}"' if row.name else ""
            sources[row.id] = f"(from your document{named} of {_day(row.uploaded)}) "
        elif row.said is not None:
            sources[row.id] = f"(you said on {_day(row.said)}) "
    return sources


def _day(moment: datetime) -> str:
    return f"{moment.day} {moment:%B %Y}"


def with_note(prompt: list[int], note: list[int], message_tokens: int, tokenizer: Tokenizer) -> list[int]:
    """`prompt` (turn_prompt's) with `note` read at the start of its last message (of `message_tokens` content
    tokens), after the role prefix."""
    if not note:
        return prompt
    tail = message_tokens + len(tokenizer.chat.turn_end) + len(tokenizer.chat.prefix("assistant"))
    return [*prompt[: len(prompt) - tail], *note, *prompt[len(prompt) - tail :]]
