import pytest
import torch

from models import HybridLM, ModelConfig


@torch.no_grad()
def test_save_and_load_give_identical_logits(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "m")
    loaded = HybridLM.load(tmp_path / "m").eval()
    assert loaded.config == tiny_model.config
    tokens = torch.randint(0, 256, (1, 64), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(tokens).log_probs, tiny_model(tokens).log_probs)


def test_config_json_round_trip_and_validation():
    config = ModelConfig.preset("small")
    assert ModelConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(width=100, num_heads=3)
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.preset("huge")


def test_loading_a_missing_model_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        HybridLM.load(tmp_path)
