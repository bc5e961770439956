"""The fixed-shape decode step (models.static_decode) against the model's own forward."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo.utils

from models.generate import SamplingConfig, generate
from models.import_hf import read_hf_dir
from models.state import State
from models.static_decode import Ring, RingState, StaticDecoder
from models.transformer import TransformerLM
from tests.models.hf_reference import save, tiny_gemma3, tiny_llama
from tests.models.test_transformer import TOLERANCE, Vocab300

# A working context of 16 with 4 sinks (Llama) and a sliding window of 8 (Gemma 3): the windows wrap many times.
FAMILIES = {"llama": lambda: (tiny_llama(), {"context_tokens": 16, "sink_tokens": 4}),
            "gemma3": lambda: (tiny_gemma3(), {"context_tokens": 16, "sink_tokens": 4})}


def model_of(family: str, tmp_path) -> TransformerLM:
    reference, changes = FAMILIES[family]()
    config, weights = read_hf_dir(save(reference, tmp_path))
    model = TransformerLM(config.replace(**changes), Vocab300())
    model.load_state_dict(weights)
    return model.eval()


def tokens_of(count: int, seed: int = 0) -> list[int]:
    return torch.randint(0, 300, (count,), generator=torch.Generator().manual_seed(seed)).tolist()


def assert_states_close(a: State, b: State) -> None:
    assert a.position == b.position and a.tokenizer == b.tokenizer
    for ours, theirs in zip(a.layers, b.layers, strict=True):
        assert ours.keys.shape == theirs.keys.shape and ours.keys.dtype == theirs.keys.dtype
        torch.testing.assert_close(ours.keys, theirs.keys, rtol=0, atol=TOLERANCE)
        torch.testing.assert_close(ours.values, theirs.values, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prompt", [0, 2, 30])  # a new stream, one younger than its sinks, one past its windows
@torch.inference_mode()
def test_each_step_and_the_frozen_state_equal_the_models_own(family, prompt, tmp_path):
    model = model_of(family, tmp_path)
    tokens = tokens_of(prompt + 40)
    state = model(torch.tensor([tokens[:prompt]]), None).state if prompt else None
    decoder, ours, theirs = StaticDecoder(model, compiled=False), state, state
    for token in tokens[prompt:]:
        step = torch.tensor([[token]])
        mine, reference = decoder(step, ours, last_only=True), model(step, theirs, last_only=True)
        torch.testing.assert_close(mine.log_probs, reference.log_probs, rtol=0, atol=TOLERANCE)
        ours, theirs = mine.state, reference.state
    assert isinstance(ours, RingState)
    assert_states_close(ours.freeze(), theirs)


@torch.inference_mode()
def test_a_ring_loads_and_freezes_a_state_exactly(tmp_path):
    model = model_of("llama", tmp_path)
    for length in (1, 3, 4, 15, 16, 33):
        state = model(torch.tensor([tokens_of(length, seed=length)]), None).state
        frozen = Ring(model).load(state).freeze()
        for ours, theirs in zip(frozen.layers, state.layers, strict=True):
            assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


@torch.inference_mode()
def test_one_step_may_be_taken_back_and_an_older_state_is_refused(tmp_path):
    model = model_of("llama", tmp_path)
    tokens = tokens_of(40)
    state = model(torch.tensor([tokens[:30]]), None).state
    decoder = StaticDecoder(model, compiled=False)
    before = decoder(torch.tensor([[tokens[30]]]), state, last_only=True).state
    decoder(torch.tensor([[tokens[31]]]), before, last_only=True)  # read, then taken back
    again = decoder(torch.tensor([[tokens[32]]]), before, last_only=True)
    reference = model(torch.tensor([[tokens[32]]]), model(torch.tensor([[tokens[30]]]), state).state, last_only=True)
    torch.testing.assert_close(again.log_probs, reference.log_probs, rtol=0, atol=TOLERANCE)
    decoder(torch.tensor([[tokens[33]]]), again.state, last_only=True)
    with pytest.raises(ValueError, match="moved on"):
        decoder(torch.tensor([[tokens[34]]]), before, last_only=True)


@torch.inference_mode()
def test_a_reply_decoded_by_the_static_decoder_is_the_models_own(tmp_path):
    model = model_of("gemma3", tmp_path)
    prompt = torch.tensor([tokens_of(20)])
    greedy = SamplingConfig(temperature=0, max_bytes=10_000, max_tokens=60, stop_at_end_of_turn=False,
                            no_repeat_ngram=0, no_repeat_replies=0, no_repeat_openings=0)
    plain = generate(model, prompt, sampling=greedy)
    static = generate(model, prompt, sampling=greedy, decoder=StaticDecoder(model, compiled=False))
    assert "".join(plain) == "".join(static) and plain.tokens == static.tokens and len(plain.tokens) == 60
    assert isinstance(static.state, State)  # frozen for the caller to keep
    assert_states_close(static.state, plain.state)


@torch.inference_mode()
def test_compiled_once_it_decodes_two_thousand_steps_without_recompiling(tmp_path):
    model = model_of("llama", tmp_path)
    tokens = tokens_of(2_010)
    state = model(torch.tensor([tokens[:10]]), None).state
    decoder = StaticDecoder(model)
    out = decoder(torch.tensor([[tokens[10]]]), state, last_only=True)  # compiles
    torch._dynamo.utils.counters.clear()
    reference = model(torch.tensor([[tokens[10]]]), state, last_only=True)
    for token in tokens[11:]:  # the window wraps 125 times
        out = decoder(torch.tensor([[token]]), out.state, last_only=True)
        reference = model(torch.tensor([[token]]), reference.state, last_only=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0  # nothing compiled again
    assert out.state.position == 2_010
    torch.testing.assert_close(out.log_probs, reference.log_probs, rtol=0, atol=TOLERANCE)
    assert_states_close(out.state.freeze(), reference.state)


COMPILE_AND_COUNT_SYMBOLIC_TRACES = """
import sys
import torch
import torch.fx
if sys.argv[1] == "imported":
    import models.static_decode  # noqa: F401
traced = []
trace = torch.fx.Tracer.trace
def recording(tracer, root, *args, **kwargs):
    if type(tracer) is torch.fx.Tracer:  # the tracer whose patch of every module's __call__ breaks other threads
        traced.append(root)
    return trace(tracer, root, *args, **kwargs)
torch.fx.Tracer.trace = recording
torch.compile(lambda x: torch.relu(x) * 2 + 1)(torch.randn(8))
print(len(traced))
"""


@pytest.mark.parametrize("before", ["bare", "imported"])
def test_a_compile_beside_eager_reads_never_patches_every_modules_call_once_this_module_is_imported(before, tmp_path):
    """Inductor's first lowering in a process traces a helper with torch.fx's symbolic tracer, which patches
    `torch.nn.Module.__call__` for every thread: a turn decoding eagerly while the step compiled in the background
    failed with "module is not installed as a submodule". Importing models.static_decode traces it beforehand."""
    uncached = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path), "TORCHINDUCTOR_FX_GRAPH_CACHE": "0",
                "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}  # a graph from the cache is not lowered, so not traced
    found = subprocess.run([sys.executable, "-c", COMPILE_AND_COUNT_SYMBOLIC_TRACES, before], capture_output=True,
                           text=True, timeout=600, cwd=Path(__file__).parents[2], env=uncached, check=True)
    assert int(found.stdout.split()[-1]) == (1 if before == "bare" else 0)
