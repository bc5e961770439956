"""Each imported model family's chat template, as the token runs of a `ChatFormat`.

Written out per family rather than rendered from the model file's Jinja template: a stream is read
turn by turn (the state must read a turn once, the reply without its end), so the template is
needed in pieces, and user content must never become control tokens.
"""

from __future__ import annotations

from models.tokenizer import ChatFormat
from models.vocab import PretrainedTokenizer, piece_ids

# SmolLM2-Instruct's own default system prompt (its chat template adds it when none is given).
SMOLLM_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(tokenizer: PretrainedTokenizer, system_prompt: str = SMOLLM_SYSTEM_PROMPT) -> ChatFormat:
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
