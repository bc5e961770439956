"""Each imported model family's chat template, as the token runs of a `ChatFormat`.

Written out per family rather than rendered from the model file's Jinja template: a stream is read
turn by turn (the state must read a turn once, the reply without its end), so the template is
needed in pieces, and user content must never become control tokens.
"""

from __future__ import annotations

from models.tokenizer import ChatFormat
from models.vocab import PretrainedTokenizer, piece_ids

# What a ChatML stream starts with. Chosen over SmolLM2's own default ("You are a helpful AI assistant
# named SmolLM, trained by Hugging Face") by measurement: the same 15 of 20 factual answers, and over
# five turns it recalled the user's city in 3 of 3 sampled conversations against 1 of 3, a number
# stated three turns earlier in 2 of 3 against 1 of 3 (BENCHMARKS.md, "A model that talks").
SYSTEM_PROMPT = "You are a helpful assistant. Keep answers short and remember what the user tells you."


def chatml(tokenizer: PretrainedTokenizer, system_prompt: str = SYSTEM_PROMPT) -> ChatFormat:
    """<|im_start|>role\\n ... <|im_end|>\\n (SmolLM2, Qwen and other ChatML models)."""
    ids = piece_ids(tokenizer.spec, {"start": "<|im_start|>", "end": "<|im_end|>", "text_end": "<|endoftext|>"})

    def prefix(role: str) -> tuple[int, ...]:
        return (ids["start"], *tokenizer.encode(f"{role}\n"))

    turn_end = (ids["end"], *tokenizer.encode("\n"))
    return ChatFormat(
        chat_start=(*prefix("system"), *tokenizer.encode(system_prompt), *turn_end),
        document_start=(ids["text_end"],),
        turn_prefix={"user": prefix("user"), "assistant": prefix("assistant"), "system": prefix("system"),
                     "document": prefix("user")},
        turn_end=turn_end,
        stop_tokens=frozenset({ids["end"], ids["text_end"]}),
    )


def gemma(tokenizer: PretrainedTokenizer) -> ChatFormat:
    """<start_of_turn>user\\n ... <end_of_turn>\\n, the reply's role named "model"; Gemma has no system
    role, so a system turn is read as the user's."""
    ids = piece_ids(tokenizer.spec, {"bos": "<bos>", "eos": "<eos>", "start": "<start_of_turn>",
                                     "end": "<end_of_turn>"})

    def prefix(role: str) -> tuple[int, ...]:
        return (ids["start"], *tokenizer.encode(f"{role}\n"))

    return ChatFormat(
        chat_start=(ids["bos"],),
        document_start=(ids["bos"],),
        turn_prefix={"user": prefix("user"), "assistant": prefix("model"), "system": prefix("user"),
                     "document": prefix("user")},
        turn_end=(ids["end"], *tokenizer.encode("\n")),
        stop_tokens=frozenset({ids["end"], ids["eos"]}),
    )
