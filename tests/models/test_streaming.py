"""One pass, any chunking and token-by-token must agree when the state is carried."""

import pytest
import torch

from models import HybridLM

TOLERANCE = 1e-4


def run_in_chunks(model: HybridLM, tokens: torch.Tensor, chunk: int) -> torch.Tensor:
    state, logits = model.init_state(tokens.shape[0]), []
    for start in range(0, tokens.shape[1], chunk):
        out = model(tokens[:, start : start + chunk], state)
        state = out.state
        logits.append(out.log_probs)
    return torch.cat(logits, dim=1)


@pytest.fixture
def long_sequence() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (1, 4096), generator=generator)


@torch.no_grad()
@pytest.mark.parametrize("chunk", [7, 512, 1000])
def test_chunked_equals_one_pass(tiny_model, long_sequence, chunk):
    full = tiny_model(long_sequence).log_probs
    chunked = run_in_chunks(tiny_model, long_sequence, chunk)
    assert chunked.shape == full.shape
    assert (chunked - full).abs().max().item() <= TOLERANCE


@torch.no_grad()
def test_token_by_token_equals_one_pass(tiny_model, long_sequence):
    prefix = long_sequence[:, :256]
    full = tiny_model(prefix).log_probs
    stepped = run_in_chunks(tiny_model, prefix, 1)
    assert (stepped - full).abs().max().item() <= TOLERANCE


@torch.no_grad()
def test_batch_rows_are_independent(tiny_model, long_sequence):
    pair = torch.cat([long_sequence[:, :300], long_sequence[:, 300:600]])
    batched = run_in_chunks(tiny_model, pair, 64)
    alone = run_in_chunks(tiny_model, pair[1:], 64)
    assert (batched[1:] - alone).abs().max().item() <= TOLERANCE


@torch.no_grad()
def test_context_beyond_the_window_reaches_through_the_recurrence(tiny_model):
    window = tiny_model.config.attention_window
    a = torch.randint(0, 256, (1, 4 * window), generator=torch.Generator().manual_seed(2))
    b = a.clone()
    b[0, 0] = (a[0, 0] + 1) % 256  # differ only far outside the attention window
    la, lb = tiny_model(a).log_probs[0, -1], tiny_model(b).log_probs[0, -1]
    assert not torch.equal(la, lb)


@torch.no_grad()
def test_state_position_and_window_are_bounded(tiny_model, long_sequence):
    out = tiny_model(long_sequence)
    assert out.state.position == long_sequence.shape[1]
    window = tiny_model.config.attention_window
    for layer in out.state.layers:
        assert all(t.shape[1] <= max(window, tiny_model.config.conv_width) for t in layer if t.dim() == 3)


def test_rejects_bad_inputs(tiny_model):
    with pytest.raises(ValueError, match="time >= 1"):
        tiny_model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size"):
        tiny_model(torch.zeros(1, 3, dtype=torch.long), tiny_model.init_state(2))


def test_training_after_inference_in_the_same_process(tiny_model):
    tokens = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        tiny_model(tokens)
    loss = tiny_model.loss(tiny_model(tokens[:, :-1]).log_probs, tokens[:, 1:])
    loss.backward()
    assert tiny_model.embedding.grad is not None
