import pytest
import torch

from models import HybridLM, ModelConfig


@pytest.fixture
def tiny_model() -> HybridLM:
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    # Non-zero biases and norm scales, so a wrongly wired parameter cannot hide behind a zero init.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.endswith("a_param"):
                param.add_(torch.randn_like(param) * 0.05)
    return model
