import pytest
import torch

from models import ByteTokenizer, HybridLM, SamplingConfig, Special, generate
from models.generate import (
    ReplyGuards,
    banned_by_claims,
    banned_by_ngrams,
    banned_by_openings,
    first_sentence,
    sample_token,
)
from models.model import ModelOutput


class ScriptedModel(HybridLM):
    """A real HybridLM whose logits are overridden to emit a fixed token script."""

    def __init__(self, base: HybridLM, script: list[int]):
        super().__init__(base.config)
        self.load_state_dict(base.state_dict())
        self.script, self.calls = script, 0

    def forward(self, tokens, state=None, memory=None, last_only=False):
        out = super().forward(tokens, state, memory, last_only=last_only)
        logits = torch.full_like(out.log_probs, -50.0)
        logits[:, -1, self.script[min(self.calls, len(self.script) - 1)]] = 50.0
        self.calls += 1
        return ModelOutput(log_probs=logits, state=out.state, memory_kv=out.memory_kv)


def test_pieces_are_valid_utf8_and_generation_stops_at_end_of_turn(tiny_model):
    reply = "é€😀".encode() + b"\xff" + b"ok"
    model = ScriptedModel(tiny_model, [*list(reply), int(Special.END_OF_TURN)]).eval()
    gen = generate(model, torch.tensor([[1, 2, 3]]), sampling=SamplingConfig(temperature=0))
    pieces = list(gen)
    assert all(p for p in pieces)
    assert "".join(pieces) == reply.decode("utf-8", errors="replace")
    assert gen.stop_reason == "end_of_turn"
    assert gen.tokens == list(reply) and gen.reply == reply
    assert gen.state.position == 3 + len(reply)  # the reply was read, its stop token was not


def test_byte_budget_stops_generation(tiny_model):
    gen = generate(tiny_model, torch.tensor([[65]]), sampling=SamplingConfig(seed=0, max_bytes=17))
    text = "".join(gen)
    assert gen.stop_reason in ("max_bytes", "end_of_turn")
    assert len([t for t in gen.tokens if t < 256]) <= 17
    text.encode("utf-8")


def test_same_seed_same_sample_and_state_matches_a_single_pass(tiny_model):
    prompt = torch.tensor([[72, 105, 33]])
    sampling = SamplingConfig(seed=7, max_bytes=40, temperature=1.0, top_p=0.9)
    first, second = generate(tiny_model, prompt, sampling=sampling), generate(tiny_model, prompt, sampling=sampling)
    assert list(first) == list(second) and first.tokens == second.tokens
    with torch.no_grad():
        replay = tiny_model(torch.cat([prompt, torch.tensor([first.tokens])], dim=1))
        probe = torch.tensor([[10]])
        torch.testing.assert_close(
            tiny_model(probe, first.state).log_probs, tiny_model(probe, replay.state).log_probs, atol=1e-4, rtol=1e-4
        )


def test_a_token_leading_into_a_claim_is_taken_back_and_the_state_stays_exact(tiny_model):
    prompt = torch.tensor([[72, 105, 33]])
    greedy = SamplingConfig(temperature=0, max_bytes=12, no_repeat_ngram=0)
    free = generate(tiny_model, prompt, sampling=greedy)
    list(free)
    said, then = free.tokens[0], free.tokens[1]
    # A claim of the greedy reply's first two tokens: its first is taken back, as it would lead into the second.
    guarded = generate(tiny_model, prompt, sampling=greedy, guards=ReplyGuards(claims=[[said, then]]))
    list(guarded)
    assert guarded.tokens[0] != said
    assert all(guarded.tokens[i : i + 2] != [said, then] for i in range(len(guarded.tokens)))
    with torch.no_grad():  # what was taken back left nothing in the state: it read the reply and only that
        replay = tiny_model(torch.cat([prompt, torch.tensor([guarded.tokens])], dim=1))
        probe = torch.tensor([[10]])
        torch.testing.assert_close(tiny_model(probe, guarded.state).log_probs,
                                   tiny_model(probe, replay.state).log_probs, atol=1e-4, rtol=1e-4)


def test_sampler_respects_top_p_and_never_emits_role_tokens():
    logits = torch.full((264,), -10.0)
    logits[int(Special.USER)] = 100.0  # a role token must never be sampled
    logits[65], logits[66] = 5.0, 4.0
    gen = torch.Generator().manual_seed(0)
    allowed = ByteTokenizer().generatable()
    draws = {sample_token(logits, SamplingConfig(top_p=0.5, temperature=1.0), gen, allowed) for _ in range(50)}
    assert draws == {65}
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0)


@pytest.mark.parametrize("temperature, top_p", [(1e-300, 0.9), (1.0, 5e-324), (1e-300, 5e-324), (5.0, 1.0)])
def test_extreme_but_valid_sampling_numbers_still_draw_a_token(temperature, top_p):
    logits = torch.full((264,), -10.0)
    logits[65], logits[66] = 5.0, 4.0
    allowed = ByteTokenizer().generatable()
    draw = sample_token(logits, SamplingConfig(temperature=temperature, top_p=top_p), torch.Generator(), allowed)
    assert draw == 65 or (temperature == 5.0 and allowed[draw])
    with pytest.raises(ValueError, match="seed"):
        SamplingConfig(seed=2**64)


def test_min_bytes_holds_end_of_turn_back(tiny_model):
    model = ScriptedModel(tiny_model, [int(Special.END_OF_TURN), 65, int(Special.END_OF_TURN)]).eval()
    gen = generate(model, torch.tensor([[1]]), sampling=SamplingConfig(temperature=0, min_bytes=1))
    assert "".join(gen) != "" and gen.stop_reason == "end_of_turn"
    with pytest.raises(ValueError, match="min_bytes"):
        SamplingConfig(min_bytes=5, max_bytes=4)


def test_repetition_guards_steer_away_from_what_the_reply_already_said():
    logits = torch.full((264,), -10.0)
    logits[65], logits[66] = 5.0, 4.9
    allowed, greedy = ByteTokenizer().generatable(), SamplingConfig(temperature=0, repetition_penalty=1.0)
    assert sample_token(logits, greedy, None, allowed, [65]) == 65
    penalised = SamplingConfig(temperature=0, repetition_penalty=1.1)
    assert sample_token(logits, penalised, None, allowed, [65]) == 66
    no_repeat = SamplingConfig(temperature=0, repetition_penalty=1.0, no_repeat_ngram=2)
    assert sample_token(logits, no_repeat, None, allowed, [65, 65]) == 66  # "65 65" would appear twice
    assert banned_by_ngrams([1, 2, 3, 1, 2], 3) == [3] and banned_by_ngrams([1, 2], 3) == []
    only = torch.zeros(264, dtype=torch.bool)
    only[65] = True  # a guard never leaves nothing to say
    assert sample_token(logits, no_repeat, None, only, [65, 65]) == 65


def test_a_reply_does_not_repeat_an_n_gram_of_the_sessions_recent_replies():
    earlier = [[5, 6, 7, 8, 9], [1, 2, 3, 4]]
    assert banned_by_ngrams([5, 6], 3, earlier) == [7]  # "5 6" began an earlier reply: its "7" is not sampled
    assert banned_by_ngrams([0, 1, 2], 3, earlier) == [3]
    assert banned_by_ngrams([0, 1, 2], 3) == []  # without them, only the reply's own n-grams count
    assert banned_by_ngrams([5], 3, earlier) == []  # too short to begin an n-gram yet
    assert sorted(banned_by_ngrams([5, 6, 7, 5, 6], 3, earlier)) == [7, 7]
    # Greedy sampling takes the best token left: the earlier reply's next token is not it.
    logits = torch.zeros(10)
    logits[7], logits[4] = 5.0, 1.0
    allowed = torch.ones(10, dtype=torch.bool)
    greedy = SamplingConfig(temperature=0.0, no_repeat_ngram=3)
    assert sample_token(logits, greedy, None, allowed, [5, 6], ReplyGuards(earlier=earlier)) == 4
    assert sample_token(logits, greedy, None, allowed, [5, 6]) == 7


def test_a_reply_does_not_open_as_an_earlier_reply_opened():
    openings = [[10, 11, 12, 13, 14], [20, 21]]  # an earlier reply's first sentence; a two-token one ("Sure!")
    assert banned_by_openings([], openings) == []  # the same first word is fine...
    assert banned_by_openings([10, 11], openings) == []  # ...and the first OPENING_SHARED_TOKENS tokens
    assert banned_by_openings([10, 11, 12], openings) == [13]  # past them, not the earlier sentence's next token
    assert banned_by_openings([10, 11, 12, 13], openings) == [14]
    assert banned_by_openings([10, 11, 12, 13, 14], openings) == []  # the sentence was left already
    assert banned_by_openings([10, 11, 9], openings) == []  # another opening
    assert banned_by_openings([20], openings) == [21]  # nor all of a shorter one
    assert banned_by_openings([10, 11, 12], [[10, 11, 12, 13]]) == [13]
    logits = torch.zeros(30)
    logits[13], logits[4] = 5.0, 1.0
    allowed = torch.ones(30, dtype=torch.bool)
    greedy = SamplingConfig(temperature=0.0, no_repeat_ngram=0)
    assert sample_token(logits, greedy, None, allowed, [10, 11, 12], ReplyGuards(openings=openings)) == 4
    assert sample_token(logits, greedy, None, allowed, [10, 11, 12]) == 13


def test_a_reply_never_completes_a_claim():
    claims = [[40, 41, 42], [43, 42]]  # "I'm Quentin" mid-reply and at its start: the name's first token last
    assert banned_by_claims([], claims) == []
    assert banned_by_claims([43], claims) == [42]  # at the reply's start
    assert banned_by_claims([7, 40, 41], claims) == [42]
    assert banned_by_claims([7, 40], claims) == []  # not yet: "I'm" may go on otherwise
    assert banned_by_claims([7, 41], claims) == []
    logits = torch.zeros(50)
    logits[42], logits[4] = 5.0, 1.0
    allowed = torch.ones(50, dtype=torch.bool)
    greedy = SamplingConfig(temperature=0.0, no_repeat_ngram=0)
    assert sample_token(logits, greedy, None, allowed, [7, 40, 41], ReplyGuards(claims=claims)) == 4
    assert sample_token(logits, greedy, None, allowed, [7, 40, 41]) == 42


def test_first_sentence_ends_at_a_stop_and_a_space():
    assert first_sentence("  I'm glad. You're here! ") == "I'm glad."
    assert first_sentence("Version 2.5 is out") == "Version 2.5 is out"
    assert first_sentence("Really?! Yes.") == "Really?!"
