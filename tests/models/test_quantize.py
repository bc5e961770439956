"""Serving weights (int8 for decoding, a bf16 or fp32 copy for prompts): close to the fp32 model, streamed
consistently."""

import pytest
import torch

from models.import_hf import read_hf_dir
from models.quantize import ServingLinear, int8_kernel_available, quantize_weights
from models.transformer import TransformerLM
from tests.models.hf_reference import save, tiny_llama
from tests.models.test_transformer import Vocab300, streamed

pytestmark = pytest.mark.skipif(not int8_kernel_available(), reason="this PyTorch has no int8 weight-only kernel")


@pytest.mark.parametrize("prompt_dtype", [torch.bfloat16, torch.float32])
def test_int8_weights_stay_close_and_stream_consistently(tmp_path, prompt_dtype):
    config, weights = read_hf_dir(save(tiny_llama(), tmp_path))
    exact, quantized = TransformerLM(config, Vocab300()), TransformerLM(config, Vocab300())
    exact.load_state_dict(weights)
    quantized.load_state_dict(weights)
    quantize_weights(quantized.eval(), prompt_dtype=prompt_dtype)
    layer = quantized.layers[0]
    assert isinstance(layer.attention.qkv, ServingLinear) and isinstance(layer.mlp.gate_up, ServingLinear)
    assert isinstance(layer.attention.out, ServingLinear) and quantized.unembedding is not None
    assert all(module.prompt_weight.dtype == prompt_dtype for module in quantized.modules()
               if isinstance(module, ServingLinear))
    # A prompt's attention computes as its products do; fp32 is the activations' own type.
    assert {layer.attention.prompt_dtype for layer in quantized.layers} == {
        None if prompt_dtype == torch.float32 else prompt_dtype}
    tokens = torch.randint(0, 300, (1, 24), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        reference, one_pass = exact(tokens).log_probs, quantized(tokens).log_probs
    # Close in distribution: the probabilities move by a few hundredths at most.
    assert (one_pass.exp() - reference.exp()).abs().max() < 0.05
    assert (one_pass - reference).abs().max() > 0  # it really is another computation
    # Token by token (int8 products, fp32 attention) and in one pass (bf16 or fp32 products and attention), each
    # within a hundredth of the exact log-probabilities: they are two roundings of one computation.
    torch.testing.assert_close(streamed(quantized, tokens, 1), reference, rtol=0, atol=1e-2)
    torch.testing.assert_close(one_pass, reference, rtol=0, atol=1e-2)
