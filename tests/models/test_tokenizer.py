import random

from models import ByteTokenizer, Special
from models.tokenizer import Utf8Pieces


def test_round_trips_arbitrary_bytes_including_invalid_utf8():
    tok = ByteTokenizer()
    rng = random.Random(0)
    samples = [b"", b"\xff\xfe\x80", b"caf\xc3\xa9 \xe2\x82", bytes(range(256))]
    samples += [rng.randbytes(rng.randrange(1, 300)) for _ in range(50)]
    for data in samples:
        assert tok.decode(tok.encode(data)) == data


def test_turns_are_marked_and_specials_carry_no_bytes():
    tok = ByteTokenizer()
    ids = tok.encode_turn("user", "hé")
    assert ids[0] == Special.USER and ids[-1] == Special.END_OF_TURN
    assert tok.decode(ids) == "hé".encode()
    assert all(s >= 256 for s in Special) and tok.vocab_size == 256 + len(Special)


def test_utf8_pieces_are_never_broken():
    rng = random.Random(1)
    text = "naïve – 日本語 😀 done"  # noqa: RUF001 - an en dash on purpose: a multi-byte character
    streams = [text.encode(), rng.randbytes(500), "é".encode() + b"\xc3" + "€".encode()]
    for data in streams:
        pieces = Utf8Pieces()
        out = [pieces.push(bytes([b])) for b in data] + [pieces.flush()]
        for piece in out:
            piece.encode("utf-8")  # raises on a lone surrogate or other broken text
        assert "".join(out) == data.decode("utf-8", errors="replace")
    pieces = Utf8Pieces()
    assert [pieces.push(bytes([b])) for b in "€".encode()] == ["", "", "€"]
