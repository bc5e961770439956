"""Small vocabularies in the two imported formats, built in code: the tests need no model files."""

from models.chat_formats import chatml, gemma
from models.vocab import PretrainedTokenizer, TokenType, VocabSpec, _gpt2_byte_chars

WORDS = ["user", "assistant", "model", "system", "the", "hello", "there", "general"]


def tiny_chatml_spec() -> VocabSpec:
    """Byte-level BPE: control tokens, every byte, and merges that build a few words."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    byte_chars = sorted(_gpt2_byte_chars(), key=lambda c: _gpt2_byte_chars()[c])
    tokens, merges = [*specials, *byte_chars], []
    for word in [*WORDS, *("\u0120" + w for w in WORDS)]:
        piece = word[0]
        for char in word[1:]:
            merges.append((piece, char))
            piece += char
            if piece not in tokens:
                tokens.append(piece)
    types = [TokenType.CONTROL] * len(specials) + [TokenType.NORMAL] * (len(tokens) - len(specials))
    return VocabSpec("bpe", tokens, types, merges=merges, split_digits=True)


def tiny_chatml_tokenizer() -> PretrainedTokenizer:
    return PretrainedTokenizer(tiny_chatml_spec(), "tiny-chatml", lambda t: chatml(t, system_prompt="Be brief."))


def tiny_spm_spec() -> VocabSpec:
    """SentencePiece-style: control tokens, byte fallback, letters and scored merges of a few words."""
    controls = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tokens = [*controls, *(f"<0x{b:02X}>" for b in range(256)), "\n", "\n\n"]
    types = [TokenType.CONTROL] * len(controls) + [TokenType.BYTE] * 256 + [TokenType.USER_DEFINED] * 2
    scores = [0.0] * len(tokens)
    pieces = sorted({c for w in WORDS for c in "\u2581" + w} | {"\u2581"})
    for word in WORDS:
        for text in (word, "\u2581" + word):
            pieces += [text[:i] for i in range(2, len(text) + 1) if text[:i] not in pieces]
    for rank, piece in enumerate(pieces):
        tokens.append(piece)
        types.append(TokenType.NORMAL)
        scores.append(-float(rank))
    return VocabSpec("spm", tokens, types, scores=scores)


def tiny_spm_tokenizer() -> PretrainedTokenizer:
    return PretrainedTokenizer(tiny_spm_spec(), "tiny-spm", gemma)
