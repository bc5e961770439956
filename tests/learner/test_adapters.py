"""Low-rank adapters (models.adapters), as a learner adds them and as serving carries them: a fresh one
changes nothing, every learner draws the same ones, a step moves only them, downhill, and serving's fused
int8 products with the learned adapters compute what the learner's model computes."""

import copy

import pytest
import torch

from learner.online import Chunk, LearningConfig, OnlineLearner
from models.adapters import adapter_tensors, attach_adapters
from models.quantize import int8_kernel_available, quantize_weights
from tests.models.hf_reference import tiny_llama
from tests.models.test_memory_layers import with_memory_layers

ADAPTERS = LearningConfig(trainable="adapters", learning_rate=1e-3, anchor_decay=0.0, adapter_rank=4)


def learned_model(tmp_path, memory_layers=(0,)):
    model = with_memory_layers(tiny_llama(), tmp_path, memory_layers=memory_layers)
    tokens = torch.randint(0, 300, (1, 49), generator=torch.Generator().manual_seed(0))
    return model, tokens[:, :-1], tokens[:, 1:]


def test_a_fresh_adapter_changes_nothing_and_a_step_moves_only_the_adapters_downhill(tmp_path):
    model, inputs, targets = learned_model(tmp_path)
    before = model(inputs).log_probs
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    learner = OnlineLearner(model, ADAPTERS)
    assert len(learner.params) == 2 * 2 * 7  # A and B of seven projections on the two layers above memory layer 0
    torch.testing.assert_close(model(inputs).log_probs, before)

    for _ in range(2):  # B moves on the first step (A's gradient is 0 while B is), both on the second
        scored = learner.step(Chunk(inputs, targets, model.init_state(1))).loss
    with torch.no_grad():
        after_step = model.loss(model(inputs).log_probs, targets).item()
    assert after_step < scored
    parameters = dict(model.named_parameters())
    for name, weight in weights.items():  # the model's own weights sit under the adapters, unchanged
        assert torch.equal(parameters[name].detach(), weight), name
    assert all(parameters[name].abs().sum() > 0 for name in learner.params if name.endswith(".b"))


def test_every_learner_of_an_agent_draws_the_same_adapters(tmp_path):
    """A forget replays from the base with a new learner: its adapters must start where the first one's did."""
    first, _, _ = learned_model(tmp_path / "a")
    second, _, _ = learned_model(tmp_path / "b")
    torch.manual_seed(1)
    OnlineLearner(first, ADAPTERS)
    torch.manual_seed(2)
    OnlineLearner(second, ADAPTERS)
    a, b = adapter_tensors(first), adapter_tensors(second)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    assert not torch.equal(a["layers.1.attention.q.adapter.a"], a["layers.2.attention.q.adapter.a"])


@pytest.mark.skipif(not int8_kernel_available(), reason="this PyTorch build has no int8 weight-only kernel")
@pytest.mark.parametrize("rows", [1, 40])  # the int8 products (decoding) and the prompts' copies
@pytest.mark.parametrize("memory_layers", [(0,), (0, 1, 2)])
def test_serving_carries_learned_adapters_through_its_fused_products(tmp_path, rows, memory_layers):
    """Fused q/k/v with all three adapted (layers 1, 2 above memory layer 0) and with the query's alone (the
    last layer, itself a memory layer)."""
    model, inputs, targets = learned_model(tmp_path, memory_layers)
    learner = OnlineLearner(model, ADAPTERS)
    for _ in range(3):
        learner.step(Chunk(inputs, targets, model.init_state(1)))
    model.eval()
    inputs = inputs[:, :rows]
    with torch.no_grad():
        learned = model(inputs).log_probs
        plain = copy.deepcopy(model)
        for name, _ in list(plain.named_parameters()):
            if ".adapter." in name:
                plain.get_submodule(name.rsplit(".adapter.", 1)[0]).adapter = None
        served_base = quantize_weights(copy.deepcopy(plain)).eval()
        unadapted = served_base(inputs).log_probs
        # As a serving process adds a version's adapters: to a copy sharing every tensor of its base's.
        served = copy.deepcopy(served_base, memo={id(t): t for t in served_base.buffers()})
        attach_adapters(served, adapter_tensors(model))
        carried = served(inputs).log_probs
        assert torch.equal(served_base(inputs).log_probs, unadapted)  # the shared base is never written
        quantized_with = quantize_weights(copy.deepcopy(model)).eval()(inputs).log_probs  # as the gate probes
    torch.testing.assert_close(carried, quantized_with)
    quantization = (unadapted - plain(inputs).log_probs).abs().max()
    learned_change = (learned - plain(inputs).log_probs).abs().max()
    assert learned_change > 3 * quantization  # the learning is visible above int8's own error...
    assert (carried - learned).abs().max() < 2 * quantization  # ...and serving keeps it


@pytest.mark.parametrize("memory_layers", [(0, 1), (0, 1, 2)])
def test_learning_adapters_never_changes_stored_keys_or_values(tmp_path, memory_layers):
    """Adapters on the layer above the memory layers, or, with none above, on the last memory layer's query,
    output and MLP: the stored pairs stay valid."""
    from models.layer_memory import StreamPairs

    model = with_memory_layers(tiny_llama(), tmp_path, memory_layers=memory_layers)
    tokens = torch.randint(0, 300, (1, 97), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(tokens)
    learner = OnlineLearner(model, LearningConfig(trainable="adapters", learning_rate=0.05, anchor_decay=0.0))
    pairs, state = StreamPairs(), model.init_state(1)
    for start in range(0, 96, 24):  # read through the memory, so gradients also reach the retrieval path
        step = learner.step(Chunk(tokens[:, start : start + 24], tokens[:, start + 1 : start + 25], state), pairs)
        pairs.add(step.memory_kv, start)
        state = step.state
    with torch.no_grad():
        after = model(tokens)
    assert (after.log_probs - before.log_probs).abs().max() > 1e-3  # it learned
    stored, now = before.memory_kv, after.memory_kv
    assert torch.equal(stored.keys, now.keys) and torch.equal(stored.values, now.values)


def test_learning_in_bf16_scores_and_steps_as_learning_in_fp32_does(tmp_path):
    """Mixed precision (`bf16_learning_pays`, on by default where bf16 is fast): products and attention in bf16,
    while the adapters, their steps, the loss and the stored pairs stay fp32."""
    runs = {}
    for bf16 in (False, True):
        model, inputs, targets = learned_model(tmp_path / str(bf16))
        learner = OnlineLearner(model, ADAPTERS, bf16=bf16)
        steps = [learner.step(Chunk(inputs, targets, model.init_state(1))) for _ in range(3)]
        runs[bf16] = steps, adapter_tensors(model)
    (fp32_steps, fp32_adapters), (bf16_steps, bf16_adapters) = runs[False], runs[True]
    assert bf16_steps[-1].loss < bf16_steps[0].loss  # downhill
    for exact, mixed in zip(fp32_steps, bf16_steps, strict=True):
        assert abs(mixed.loss - exact.loss) < 0.01 * exact.loss
        assert mixed.memory_kv.keys.dtype == mixed.memory_kv.values.dtype == torch.float32
        torch.testing.assert_close(mixed.memory_kv.keys, exact.memory_kv.keys, rtol=0.05, atol=0.05)
    assert all(tensor.dtype == torch.float32 for tensor in bf16_adapters.values())
    for name, exact in fp32_adapters.items():  # the same step, to bf16's rounding
        if name.endswith(".b"):
            similarity = torch.nn.functional.cosine_similarity(exact.flatten(), bf16_adapters[name].flatten(), dim=0)
            assert similarity > 0.95, name
