"""Which global layers of an imported model become memory layers, by measurement.

A memory layer helps where the model copies from its context: a token seen before, then what
followed it (induction heads, Olsson et al. 2022). On a random token sequence read twice, an
induction head's query at the second copy puts its attention on the first copy's next token.
Measured once when a model is loaded: a fixed seed and a fixed sequence make it deterministic.

Copying a stated fact back out of memory needs more than the strong induction heads: the layers that
move the question's meaning into them must see the memory too. So the memory layers are the band from
one layer below the first strong induction layer to the last (the measurements on SmolLM2-135M:
BENCHMARKS.md, "Which layers are memory layers").
"""

from __future__ import annotations

import torch

from models.rotary import rotate
from models.transformer import TransformerLM

# A layer whose best head puts this much attention on the induction target is a strong induction layer.
STRONG = 0.1
SEQUENCE = 96  # random tokens, read twice


@torch.no_grad()
def induction_scores(model: TransformerLM, length: int = SEQUENCE, seed: int = 0) -> torch.Tensor:
    """(layers,) each layer's best head's mean attention to the token after its query's earlier copy."""
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    sequence = torch.randint(vocab // 8, vocab // 2, (1, length), generator=generator, device="cpu")
    tokens = torch.cat([sequence, sequence], 1).to(model.device)
    inputs: dict[int, torch.Tensor] = {}
    hooks = [layer.attention.register_forward_hook(lambda _m, args, _o, i=i: inputs.__setitem__(i, args[0]))
             for i, layer in enumerate(model.layers)]
    try:
        model(tokens)
    finally:
        for hook in hooks:
            hook.remove()
    scores = torch.zeros(model.config.num_layers)
    queries = torch.arange(length + 1, 2 * length)
    for i, layer in enumerate(model.layers):
        attention, x = layer.attention, inputs[i].float()
        T = x.shape[1]
        q = (x @ attention.q.weight.float()).view(1, T, attention.heads, attention.head_dim).transpose(1, 2)
        k = (x @ attention.k.weight.float()).view(1, T, attention.kv_heads, attention.head_dim).transpose(1, 2)
        if attention.q_norm is not None:
            q, k = attention.q_norm(q), attention.k_norm(k)
        q, k = rotate(q, 0, attention.rope_base), rotate(k, 0, attention.rope_base)
        k = k.repeat_interleave(attention.heads // attention.kv_heads, 1)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        weights = ((q @ k.transpose(-1, -2)) * attention.scale).masked_fill(causal, float("-inf")).softmax(-1)
        scores[i] = weights[0, :, queries, queries - length + 1].mean(-1).max().cpu()
    return scores


def choose_memory_layers(model: TransformerLM) -> tuple[int, ...]:
    """The global layers that become memory layers: all of them where the model has sliding layers too
    (Gemma 3: one in six), else the band around its strong induction layers (see the module docstring)."""
    config = model.config
    global_layers = [i for i, sliding in enumerate(config.sliding_layers) if not sliding]
    if any(config.sliding_layers):
        return tuple(global_layers)
    scores = induction_scores(model)
    strong = [i for i in global_layers if scores[i] >= STRONG]
    if not strong:  # no induction heads (an untrained model): the upper half
        strong = global_layers[len(global_layers) // 2 :]
    return tuple(i for i in global_layers if strong[0] - 1 <= i <= strong[-1])
