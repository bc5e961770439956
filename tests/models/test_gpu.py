"""CUDA paths: flash-attn's sliding-window kernel against the PyTorch path. Skipped without CUDA."""

import pytest
import torch

from models import HybridLM, ModelConfig, attention

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _pytorch_path(monkeypatch, fn):
    monkeypatch.setattr(attention, "_flash_attn_func", None)
    return fn()


@needs_cuda
@pytest.mark.skipif(attention._flash_attn_func is None, reason="flash-attn is not installed")
@pytest.mark.parametrize("cached,steps", [(0, 1000), (300, 1), (512, 512), (100, 77)])
def test_flash_attn_matches_pytorch_attention(monkeypatch, cached, steps):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(2, steps, 4, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(2, cached + steps, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(2, cached + steps, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
    kwargs = {"cached": cached, "window": 256, "scale": 0.125}
    flash = attention.sliding_window_attention(q, k, v, **kwargs)
    reference = _pytorch_path(monkeypatch, lambda: attention.sliding_window_attention(q, k, v, **kwargs))
    torch.testing.assert_close(flash.float(), reference.float(), atol=2e-2, rtol=2e-2)


@needs_cuda
@torch.no_grad()
def test_cuda_model_matches_cpu_model():
    torch.manual_seed(0)
    cpu = HybridLM(ModelConfig.preset("tiny")).eval()
    gpu = HybridLM(ModelConfig.preset("tiny")).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    tokens = torch.randint(0, 256, (2, 700))
    expected = cpu(tokens).log_probs
    state, chunks = gpu.init_state(2), []
    for start in range(0, 700, 128):
        out = gpu(tokens[:, start : start + 128].cuda(), state)
        state, chunks = out.state, [*chunks, out.log_probs.cpu()]
    torch.testing.assert_close(torch.cat(chunks, 1), expected, atol=1e-3, rtol=1e-3)
