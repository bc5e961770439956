"""The imported architectures equal transformers' own, on the same weights, however the stream is fed."""

import pytest
import torch

from models import State
from models.import_hf import read_hf_dir
from models.tokenizer import ByteTokenizer
from models.transformer import TransformerLM
from tests.models.hf_reference import reference_log_probs, save, tiny_gemma3, tiny_llama

REFERENCES = {"llama": tiny_llama, "gemma3": tiny_gemma3}
TOLERANCE = 1e-4  # fp32, max abs difference of log-probabilities


class Vocab300(ByteTokenizer):
    name, vocab_size = "ids-300", 300


def ours(reference, tmp_path) -> TransformerLM:
    config, weights = read_hf_dir(save(reference, tmp_path))
    model = TransformerLM(config, Vocab300())
    model.load_state_dict(weights)
    return model.eval()


def streamed(model: TransformerLM, tokens: torch.Tensor, chunk: int) -> torch.Tensor:
    state, outputs = None, []
    with torch.no_grad():
        for piece in tokens.split(chunk, dim=1):
            out = model(piece, state)
            state, outputs = out.state, [*outputs, out.log_probs]
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("family", REFERENCES)
def test_logits_equal_the_reference_in_one_pass_in_chunks_and_token_by_token(family, tmp_path):
    reference = REFERENCES[family]()
    model = ours(reference, tmp_path)
    tokens = torch.randint(0, 300, (1, 37), generator=torch.Generator().manual_seed(1))
    expected = reference_log_probs(reference, tokens)
    for chunk in (37, 5, 1):  # Gemma's window is 8: chunks and single tokens cross it many times
        diff = (streamed(model, tokens, chunk) - expected).abs().max().item()
        assert diff <= TOLERANCE, f"{family}, chunks of {chunk}: max abs diff {diff}"


def test_the_sliding_window_matters_so_the_parity_above_tests_it(tmp_path):
    tokens = torch.randint(0, 300, (1, 30), generator=torch.Generator().manual_seed(2))
    narrow, wide = reference_log_probs(tiny_gemma3(sliding_window=4), tokens), \
        reference_log_probs(tiny_gemma3(sliding_window=64), tokens)
    assert (narrow[:, 10:] - wide[:, 10:]).abs().max() > 1e-2
    assert (narrow[:, :4] - wide[:, :4]).abs().max() < 1e-5


def test_a_state_survives_its_byte_format_and_refuses_another_vocabulary(tmp_path):
    model = ours(tiny_gemma3(), tmp_path)
    tokens = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        state = model(tokens).state
        restored = State.from_bytes(state.to_bytes())
        assert restored.tokenizer == "ids-300" and restored.position == 20
        probe = torch.tensor([[7, 8]])
        torch.testing.assert_close(model(probe, restored).log_probs, model(probe, state).log_probs, rtol=0, atol=0)
        # Sliding layers keep their window, global layers the working context.
        sizes = {layer.keys.shape[2] for layer in state.layers}
        assert sizes == {model.config.sliding_window - 1, 20}
        other = State(layers=state.layers, position=state.position, tokenizer="bytes")
        with pytest.raises(ValueError, match="tokenizer 'bytes'"):
            model(probe, other)


def test_a_global_layers_working_context_bounds_the_state_and_keeps_its_sinks(tmp_path):
    config, weights = read_hf_dir(save(tiny_llama(), tmp_path))
    with_sinks, without = (TransformerLM(config.replace(context_tokens=16, sink_tokens=sinks), Vocab300())
                           for sinks in (4, 0))
    with_sinks.load_state_dict(weights)
    without.load_state_dict(weights)
    tokens = torch.randint(0, 300, (1, 50), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        one_pass = with_sinks(tokens).log_probs
        state = with_sinks(tokens).state
        plain = without(tokens).log_probs
    for chunk in (7, 1):  # the window moves past the sinks inside chunks and between them
        torch.testing.assert_close(streamed(with_sinks, tokens, chunk), one_pass, rtol=0, atol=TOLERANCE)
    assert {layer.keys.shape[2] for layer in state.layers} == {15}
    # Within the context both see everything; beyond it, the first tokens still count with sinks.
    torch.testing.assert_close(one_pass[:, :16], plain[:, :16], rtol=0, atol=TOLERANCE)
    assert (one_pass[:, 20:] - plain[:, 20:]).abs().max() > 1e-3


def test_a_long_prompt_read_in_chunks_gives_the_reply_it_gives_read_whole(tmp_path, monkeypatch):
    import importlib

    from models import SamplingConfig, generate

    generation = importlib.import_module("models.generate")  # the module (the package exports its function)
    model = ours(tiny_llama(), tmp_path)
    length = 2 * generation.PROMPT_CHUNK_TOKENS + 77
    prompt = torch.randint(0, 256, (1, length), generator=torch.Generator().manual_seed(0))

    def reply() -> tuple[list[int], int]:
        gen = generate(model, prompt, sampling=SamplingConfig(temperature=0, max_tokens=12, max_bytes=1024,
                                                              stop_at_end_of_turn=False))
        list(gen)
        return gen.tokens, gen.state.position

    chunked = reply()
    monkeypatch.setattr(generation, "PROMPT_CHUNK_TOKENS", 1 << 20)
    assert reply() == chunked and chunked[1] == length + len(chunked[0]) == length + 12


def test_sinks_and_recent_keys_in_one_fused_attention_weigh_as_their_scores_op_by_op():
    """The sinks see the query rotated to the window's far end, the recent keys see it where it is: one fused
    call gives what the two parts' scores, one softmax and their values give."""
    from models.transformer import _sinks_and_recent

    g = torch.Generator().manual_seed(5)
    heads, kv_heads, length, sinks, recent, size = 4, 2, 6, 3, 9, 8
    q_sink, q_recent = (torch.randn(1, heads, length, size, generator=g) for _ in range(2))
    k_sink, sink_values = (torch.randn(1, kv_heads, sinks, size, generator=g) for _ in range(2))
    k_recent, values = (torch.randn(1, kv_heads, recent, size, generator=g) for _ in range(2))
    mask = torch.rand(length, sinks + recent, generator=g) > 0.4
    mask[:, -1] = True  # every query sees one key at least (itself)
    group = heads // kv_heads
    scores = torch.cat((q_sink @ k_sink.repeat_interleave(group, 1).transpose(-1, -2),
                        q_recent @ k_recent.repeat_interleave(group, 1).transpose(-1, -2)), -1) * 0.3
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    expected = weights @ torch.cat((sink_values, values), 2).repeat_interleave(group, 1)
    fused = _sinks_and_recent(q_sink, k_sink, sink_values, q_recent, k_recent, values, mask, 0.3)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)

