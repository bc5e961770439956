"""Memory layers: with k = every stored pair and true positions, an imported model's memory layers are its
own full attention over the whole history, however the stream is fed; wrong pairs or positions break that."""

import pytest
import torch

from models.import_hf import read_hf_dir
from models.layer_memory import StreamPairs
from models.memory import RetrievedMemory
from models.transformer import TransformerLM
from tests.models.hf_reference import reference_log_probs, save, tiny_gemma3, tiny_llama
from tests.models.test_transformer import TOLERANCE, Vocab300

LENGTH = 45


def with_memory_layers(reference, tmp_path, **changes) -> TransformerLM:
    config, weights = read_hf_dir(save(reference, tmp_path))
    global_layers = tuple(i for i, sliding in enumerate(config.sliding_layers) if not sliding)
    # A working context far shorter than the stream: most of what a global layer sees comes from memory.
    changes = {"context_tokens": 12, "sink_tokens": 4, "memory_layers": global_layers, "memory_top_k": 64,
               "memory_positions": "exact", **changes}
    model = TransformerLM(config.replace(**changes), Vocab300())
    model.load_state_dict(weights)
    return model.eval()


def read_with_memory(model: TransformerLM, tokens: torch.Tensor, chunk: int, memory=None) -> torch.Tensor:
    memory = StreamPairs() if memory is None else memory
    state, outputs = None, []
    with torch.no_grad():
        for piece in tokens.split(chunk, dim=1):
            start = 0 if state is None else state.position
            out = model(piece, state, memory)
            memory.add(out.memory_kv, start)  # as the learner stores every token it reads
            state, outputs = out.state, [*outputs, out.log_probs]
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_k_all_with_true_positions_equals_full_attention_in_one_pass_chunks_and_token_by_token(family, tmp_path):
    reference = {"llama": tiny_llama, "gemma3": tiny_gemma3}[family]()
    model = with_memory_layers(reference, tmp_path)
    tokens = torch.randint(0, 300, (1, LENGTH), generator=torch.Generator().manual_seed(11))
    expected = reference_log_probs(reference, tokens)
    for chunk in (LENGTH, 7, 1):
        diff = (read_with_memory(model, tokens, chunk) - expected).abs().max().item()
        assert diff <= TOLERANCE, f"{family}, chunks of {chunk}: max abs diff {diff}"


def test_without_memory_the_window_alone_differs_so_the_test_above_tests_the_memory(tmp_path):
    reference = tiny_llama()
    model = with_memory_layers(reference, tmp_path)
    tokens = torch.randint(0, 300, (1, LENGTH), generator=torch.Generator().manual_seed(11))
    expected = reference_log_probs(reference, tokens)
    with torch.no_grad():
        windowed = model(tokens).log_probs
    assert (windowed - expected).abs().max() > 1e-2


class Shifted(StreamPairs):
    """Returns the right pairs at the wrong positions, or the wrong pairs at the right positions."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def search_channel(self, channel, queries, top_k, *, stream_range):
        found, positions = super().search_channel(channel, queries, top_k, stream_range=stream_range)
        if self.what == "positions":
            return found, torch.where(positions >= 0, positions + 1, positions)
        rolled = RetrievedMemory(found.keys, found.values.roll(1, dims=3), found.mask, found.ids)
        return rolled, positions


@pytest.mark.parametrize("what", ["positions", "pairs"])
def test_wrong_positions_or_wrong_pairs_break_the_equality(what, tmp_path):
    reference = tiny_llama()
    model = with_memory_layers(reference, tmp_path)
    tokens = torch.randint(0, 300, (1, LENGTH), generator=torch.Generator().manual_seed(11))
    expected = reference_log_probs(reference, tokens)
    assert (read_with_memory(model, tokens, 7, Shifted(what)) - expected).abs().max() > 1e-3


def test_memory_pairs_are_every_memory_layers_keys_and_values_per_token(tmp_path):
    model = with_memory_layers(tiny_gemma3(), tmp_path)
    tokens = torch.randint(0, 300, (1, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(tokens)
    config = model.config
    assert out.memory_kv.keys.shape == (1, 9, config.memory_channels, config.head_dim)
    assert out.memory_kv.values.shape == out.memory_kv.keys.shape


def test_recall_weighs_what_a_full_read_weighs_without_the_layers_above(tmp_path):
    model = with_memory_layers(tiny_llama(), tmp_path, memory_positions="window_edge")
    tokens = torch.randint(0, 300, (1, LENGTH), generator=torch.Generator().manual_seed(11))
    memory = StreamPairs()
    with torch.no_grad():
        read = model(tokens[:, :30])
        memory.add(read.memory_kv, 0)
        question = tokens[:, 30:]  # read on from there: what left the window is in memory
        full = model(question, read.state, memory).recalled
    recalled = model.recall(question, memory, read.state)
    assert len(recalled) == len(full) == len(model.config.memory_layers)
    for mine, theirs in zip(recalled, full):
        assert torch.equal(mine.ids, theirs.ids) and torch.equal(mine.weights, theirs.weights)
        assert (mine.ids >= 0).any()  # the question did weigh stored pairs
