"""Our recurrent and local-attention blocks are Griffin's: parity with DeepMind's reference."""

import torch
from recurrentgemma import torch as rg

from models.convert import from_recurrentgemma

TOLERANCE = 1e-4


def reference_griffin() -> rg.Griffin:
    torch.manual_seed(0)
    config = rg.GriffinConfig(
        vocab_size=1000,  # not 256 + specials: the model must not assume a byte vocabulary
        width=64,
        mlp_expanded_width=96,
        num_heads=4,
        block_types=(
            rg.TemporalBlockType.RECURRENT,
            rg.TemporalBlockType.RECURRENT,
            rg.TemporalBlockType.ATTENTION,
            rg.TemporalBlockType.RECURRENT,
        ),
        embeddings_scale_by_sqrt_dim=True,
        attention_window_size=16,
        logits_soft_cap=30.0,
        lru_width=48,
    )
    model = rg.Griffin(config, gradient_checkpointing=False).eval()
    with torch.no_grad():  # zero-initialised biases and scales would hide wiring mistakes
        for name, param in model.named_parameters():
            if not name.endswith("a_param"):
                param.add_(torch.randn_like(param) * 0.1)
    return model


@torch.no_grad()
def test_converted_model_gives_the_reference_logits_in_one_pass_and_in_chunks():
    reference = reference_griffin()
    ours = from_recurrentgemma(reference).eval()
    assert ours.config.vocab_size == 1000 and ours.config.attention_window == 16
    length = 160
    tokens = torch.randint(0, 1000, (2, length), generator=torch.Generator().manual_seed(5))
    expected, _ = reference(tokens, torch.arange(length).repeat(2, 1), return_cache=False)
    expected = expected.log_softmax(-1)  # our output is log-probabilities

    assert (ours(tokens).log_probs - expected).abs().max().item() <= TOLERANCE

    state, chunks = ours.init_state(2), []
    for start in range(0, length, 23):
        out = ours(tokens[:, start : start + 23], state)
        state, chunks = out.state, [*chunks, out.log_probs]
    assert (torch.cat(chunks, dim=1) - expected).abs().max().item() <= TOLERANCE


@torch.no_grad()
def test_reference_decoding_cache_matches_our_stepping():
    reference = reference_griffin()
    ours = from_recurrentgemma(reference).eval()
    tokens = torch.randint(0, 1000, (1, 40), generator=torch.Generator().manual_seed(6))
    cache = reference.init_cache(1, torch.float32)
    state = ours.init_state(1)
    for t in range(tokens.shape[1]):
        expected, cache = reference(tokens[:, t : t + 1], torch.tensor([[t]]), cache)
        expected = expected.log_softmax(-1)
        out = ours(tokens[:, t : t + 1], state)
        state = out.state
        assert (out.log_probs - expected).abs().max().item() <= TOLERANCE
