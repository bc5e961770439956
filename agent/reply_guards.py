"""What a reply must not say, from the session it answers (`models.generate.ReplyGuards`).

The session's recent replies (no n-gram of theirs again, nor an opening of theirs) and the user's name claimed
as the agent's own. The default model answered "Hi! I'm Quentin." with "I'm Quentin, the AI assistant."
(BENCHMARKS.md, "Memory that stays out of the way"): told something, a reply never says the name a user
introduced themselves with, in this session or in a note of an earlier one, after "I'm" and its like.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from agent.recall_note import asks, introduced_names
from memory.eventlog import recent_turns
from models import SamplingConfig
from models.generate import ReplyGuards, first_sentence
from models.tokenizer import Tokenizer

# How a reply would claim a name as its own; each also after a space (mid-reply), and at a reply's start. The
# curly apostrophe (U+2019) too: with the straight one taken back, the model said "Hello, I\u2019m Philippa."
CLAIM_FORMS = ("I'm", "I\u2019m", "I am", "My name is", "my name is", "I'm called", "I\u2019m called", "Call me",
               "call me")
# The user's turns of the session looked at for the name they introduced themselves with.
NAME_LOOKBACK = 64


def claims(names: list[str], tokenizer: Tokenizer) -> list[list[int]]:
    """Token runs ending in a name's first token after each CLAIM_FORMS prefix: a reply never completes one."""
    runs = []
    for name in dict.fromkeys(names):
        for form in CLAIM_FORMS:
            for lead in ("", " "):
                prefix = tokenizer.encode(f"{lead}{form}".encode())
                whole = tokenizer.encode(f"{lead}{form} {name}".encode())
                # The name's first token where the prefix is tokenized alone; else the whole run.
                runs.append(whole[: len(prefix) + 1] if whole[: len(prefix)] == prefix else whole)
    return runs


def reply_guards(db: Session, *, tokenizer: Tokenizer, session_id: int, sampling: SamplingConfig,
                 note: str) -> ReplyGuards:
    """The guards of the session's next reply: its recent replies' n-grams and openings, and, when the message
    asks nothing, the names the user introduced themselves with in its last NAME_LOOKBACK turns (the message
    included) or in the `note`."""
    replies = recent_turns(db, session_id=session_id, role="assistant",
                           count=max(sampling.no_repeat_replies, sampling.no_repeat_openings))
    said = [turn.decode("utf-8", errors="replace")
            for turn in recent_turns(db, session_id=session_id, role="user", count=NAME_LOOKBACK)]
    # Only a reply to what asks nothing: asked "What's my name?", the default model's answer is as often as not
    # "I'm Elena." or "Hello, I am Elena and my dog is named Biscuit.", and guarded it named no one at all
    # (BENCHMARKS.md, "Memory that stays out of the way").
    telling = bool(said) and not asks(said[0])
    names = [name for text in [note, *said] for name in introduced_names(text)] if telling else []
    return ReplyGuards(
        earlier=[tokenizer.encode(reply) for reply in replies[: sampling.no_repeat_replies]],
        openings=[tokenizer.encode(first_sentence(reply.decode(errors="replace")).encode())
                  for reply in replies[: sampling.no_repeat_openings]],
        claims=claims(names, tokenizer))
