"""Hugging Face model directories: RecurrentGemma becomes a HybridLM with Griffin's own numbers, and a
directory's tokenizer.json comes with its model."""

import pytest
import torch

from models import HybridLM
from models.import_hf import read_recurrent_gemma_dir
from models.pretrained import load_pretrained
from models.tokenizer import decode
from models.transformer import TransformerLM
from tests.models.hf_reference import (
    save,
    tiny_llama,
    tiny_recurrent_gemma,
    write_tokenizer_json,
)
from tests.models.tiny_vocab import tiny_chatml_spec, tiny_spm_spec

TOLERANCE = 1e-4


def test_recurrent_gemma_equals_the_reference_in_one_pass_in_chunks_and_token_by_token(tmp_path):
    reference = tiny_recurrent_gemma()
    config, weights = read_recurrent_gemma_dir(save(reference, tmp_path))
    model = HybridLM(config)
    model.load_state_dict(weights)
    model.eval()
    tokens = torch.randint(0, 300, (1, 33), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = reference(tokens, use_cache=False).logits.float().log_softmax(-1)
        for chunk in (33, 5, 1):  # its window is 8 tokens: crossed many times
            state, outputs = None, []
            for piece in tokens.split(chunk, dim=1):
                out = model(piece, state)
                state, outputs = out.state, [*outputs, out.log_probs]
            diff = (torch.cat(outputs, 1) - expected).abs().max().item()
            assert diff <= TOLERANCE, f"chunks of {chunk}: {diff}"


@pytest.mark.parametrize("family", ["llama", "recurrent_gemma"])
def test_a_directory_loads_with_its_own_vocabulary(family, tmp_path):
    spec = tiny_chatml_spec() if family == "llama" else tiny_spm_spec()
    reference = (tiny_llama if family == "llama" else tiny_recurrent_gemma)(vocab_size=len(spec.tokens))
    save(reference, tmp_path)
    write_tokenizer_json(spec, tmp_path)
    model = load_pretrained(tmp_path, name="tiny-dir")
    assert isinstance(model, TransformerLM if family == "llama" else HybridLM)
    assert model.tokenizer.name.startswith("tiny-dir:")
    text = "hello there, general \u00e9"
    assert decode(model.tokenizer, model.tokenizer.encode(text)) == text.encode()
    tokens = torch.tensor([model.tokenizer.encode(text)])
    with torch.no_grad():
        expected = reference(tokens).logits.float().log_softmax(-1)
        state = model.init_state(1)
        assert state.tokenizer == model.tokenizer.name
        diff = (model(tokens, state).log_probs - expected).abs().max().item()
    assert diff <= TOLERANCE
