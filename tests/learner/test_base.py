import pytest

from learner.base import IMPORTED_ADAPTER_RATE, IMPORTED_LEARNING_RATE, learning_config
from learner.online import LearningConfig
from models.adapters import PROJECTIONS


def test_agent_learning_settings_default_and_override():
    assert learning_config(None) == LearningConfig()
    assert learning_config({"learning_rate": 3e-4}).learning_rate == 3e-4


@pytest.mark.parametrize("settings, message", [
    ({"lr": 0.1}, "unknown learning settings"),
    ({"trainable": "all"}, "trainable='downstream' or 'adapters'"),  # stored keys would go stale: no re-encoding yet
    ({"trainable": "adapters"}, "for imported bases"),
    ({"adapter_rank": 0}, "adapter_rank must be a whole number"),
    ({"learning_rate": -1.0}, r"learning_rate must be in \[0, 1.0\]"),
    ({"learning_rate": 1e308}, r"learning_rate must be in \[0, 1.0\]"),  # accepted once; every event then failed
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
    ({"learning_rate": "fast"}, "learning_rate must be a finite number"),
    ({"anchor_decay": True}, "anchor_decay must be a finite number"),
])
def test_bad_agent_learning_settings_are_refused_with_a_reason(settings, message):
    with pytest.raises(ValueError, match=message):
        learning_config(settings)


@pytest.mark.parametrize("settings, learned", [
    (None, {f"layers.2.{path}.adapter.{half}" for path in PROJECTIONS for half in "ab"}),
    ({"trainable": "downstream"},
     {"final_norm.weight", "layers.2.attention_norm.weight", "layers.2.mlp_norm.weight"}),
])
def test_an_imported_model_learns_only_above_its_last_memory_layer(tmp_path, settings, learned):
    import torch

    from learner.online import Chunk, OnlineLearner
    from tests.models.hf_reference import tiny_llama
    from tests.models.test_memory_layers import with_memory_layers

    model = with_memory_layers(tiny_llama(), tmp_path, memory_layers=(0, 1))  # of layers 0..2
    config = learning_config(settings, imported=True)
    assert config.learning_rate == (IMPORTED_ADAPTER_RATE if settings is None else IMPORTED_LEARNING_RATE)
    assert learning_config({"learning_rate": 0.0}, imported=True).learning_rate == 0.0  # an agent's own wins
    learner = OnlineLearner(model, config)
    assert set(learner.params) == learned
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    tokens = torch.randint(0, 300, (1, 17), generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # an adapter's B moves on the first step, its A (whose gradient is 0 while B is) next
        learner.step(Chunk(tokens[:, :-1], tokens[:, 1:], model.init_state(1)))
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == set(learner.params)  # nothing that computes a stored key or value moved
