"""The adapters bench.imported_learning measures: a fresh one changes nothing, and a step through one moves
only its own two matrices, downhill."""

import torch

from bench.adapters import add_adapters
from learner.online import Chunk, LearningConfig, OnlineLearner
from tests.models.hf_reference import tiny_llama
from tests.models.test_memory_layers import with_memory_layers


def test_a_fresh_adapter_changes_nothing_and_a_step_moves_only_the_adapters_downhill(tmp_path):
    model = with_memory_layers(tiny_llama(), tmp_path, memory_layers=(0,))
    tokens = torch.randint(0, 300, (1, 49))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    before = model(inputs).log_probs
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    masks = add_adapters(model, [1, 2], rank=4)
    assert len(masks) == 2 * 2 * 7  # A and B of seven projections on two layers
    torch.testing.assert_close(model(inputs).log_probs, before)

    learner = OnlineLearner(model, LearningConfig(learning_rate=1e-3, anchor_decay=0.0), masks=masks)
    for _ in range(2):  # B moves on the first step (A's gradient is 0 while B is), both on the second
        scored = learner.step(Chunk(inputs, targets, model.init_state(1))).loss
    with torch.no_grad():
        after_step = model.loss(model(inputs).log_probs, targets).item()
    assert after_step < scored
    parameters = dict(model.named_parameters())
    for name, weight in weights.items():  # the model's own weights sit under the adapters, unchanged
        name = name if name in parameters else name.replace(".weight", ".parametrizations.weight.original")
        assert torch.equal(parameters[name].detach(), weight), name
    assert all(parameters[name].abs().sum() > 0 for name in masks if name.endswith(".b"))
