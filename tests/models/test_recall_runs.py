"""Recall follows the stored text: a pair that named the token that came is followed to the next one."""

import hashlib
import itertools

import pytest
import torch
import torch.nn.functional as F

from models import State, TensorMemory
from models.attention import AttentionState
from models.memory import nothing_follows
from models.retrieval import LOOKUP_FROM
from models.runs import COMPARE_ALL_UP_TO, first_match, run_sums
from models.state import _HEADER, MAGIC
from tests.models.test_retrieval import read_block, retrieval_block, token_mass
from tests.models.test_streaming import TOLERANCE, run_in_chunks


def sequential_run_sums(values, carried, parent):
    """run_sums one step at a time: a pair continuing a run adds its value to the run's sum."""
    sums, steps = carried.clone(), []
    for t in range(values.shape[1]):
        now = values[:, t].clone()
        for b in range(now.shape[0]):
            for slot in range(now.shape[1]):
                if parent[b, t, slot] >= 0:
                    now[b, slot] += sums[b, parent[b, t, slot]]
        steps.append(now)
        sums = now
    return torch.stack(steps, dim=1)


@pytest.mark.parametrize("steps", [1, 2, 37])
def test_run_sums_equal_the_step_by_step_sums(steps):
    gen = torch.Generator().manual_seed(steps)
    values, carried = torch.rand(2, steps, 6, generator=gen), torch.rand(2, 6, generator=gen) * 5
    parent = torch.randint(-3, 6, (2, steps, 6), generator=gen).clamp(min=-1)  # about a third start a run
    torch.testing.assert_close(run_sums(values, carried, parent), sequential_run_sums(values, carried, parent))


@pytest.mark.parametrize("steps", [1, 300])  # a decoding step's few compared directly, a chunk's sorted
def test_first_match_is_the_first_equal_position_as_comparing_every_pair_finds_it(steps):
    gen = torch.Generator().manual_seed(steps)
    table = torch.randint(-2, 12, (2, steps, 40), generator=gen)  # repeats, -1 and -2 among them
    queries = torch.randint(-1, 14, (2, steps, 7), generator=gen)
    expected = torch.full(queries.shape, -1)
    for index in itertools.product(*map(range, queries.shape)):
        row = table[index[:-1]].tolist()
        if queries[index] in row:
            expected[index] = row.index(queries[index])
    assert (queries.numel() * table.shape[-1] <= COMPARE_ALL_UP_TO) == (steps == 1)
    assert torch.equal(first_match(queries, table), expected)


def test_stored_values_name_the_token_whose_code_is_nearest_whatever_their_precision(tiny_model):
    block = retrieval_block(tiny_model)
    gen = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, tiny_model.config.vocab_size, (2, 30, 5), generator=gen)
    mask = torch.rand(tokens.shape, generator=gen) < 0.8
    codes = block.token_codes[tokens]
    noisy = codes + 0.05 * torch.randn(codes.shape, generator=gen)  # no code exactly: compared with every code
    assert mask[:, :1].numel() < LOOKUP_FROM <= mask.numel()
    for values in (codes, codes.half(), codes.bfloat16(), noisy):
        nearest = (values.float() @ block.token_codes.T).argmax(-1)
        for few in (mask[:, :1], mask):  # compared with every code, then looked up
            assert torch.equal(
                block.named_tokens(values[:, : few.shape[1]], few), nearest[:, : few.shape[1]].masked_fill(~few, -1)
            )
    assert torch.equal(block.named_tokens(codes.half(), mask), tokens.masked_fill(~mask, -1))


class Forgetful(TensorMemory):
    """A memory whose search never finds some pairs (an approximate index's misses), and which can follow or not."""

    def __init__(self, dim, missing_id, can_follow):
        super().__init__(dim)
        self.missing_id, self.can_follow = missing_id, can_follow

    def search(self, queries, top_k):
        found = super().search(queries, top_k)
        missed = torch.isin(found.ids, torch.tensor(self.missing_id))
        return found._replace(mask=found.mask & ~missed, ids=found.ids.masked_fill(missed, -1))

    def follow(self, ids):
        return super().follow(ids) if self.can_follow else nothing_follows(ids, self.keys.shape[1])


def _stored(block, width, length, seed):
    """A past text's inputs, tokens and its pairs in a memory (and in one that cannot follow)."""
    gen = torch.Generator().manual_seed(seed)
    past, tokens = torch.randn(1, length, width, generator=gen), torch.randint(0, 256, (1, length), generator=gen)
    _, _, pairs, _ = read_block(block, past, block.init_state(1), None, tokens)
    return past, tokens, pairs


@torch.no_grad()
def test_pointer_weighs_each_pair_by_the_mean_match_of_the_run_it_continues(tiny_model):
    """The stored text read again as its context fades (ever more noise): the pair that continues
    the run scores the run's mean match, found by following or by search alike."""
    block = retrieval_block(tiny_model)
    width, vocab, length = tiny_model.config.width, tiny_model.config.vocab_size, 24
    past, tokens, pairs = _stored(block, width, length, seed=7)
    memory = TensorMemory(tiny_model.config.head_dim)
    memory.add(pairs.keys, pairs.values)
    block.top_k = length  # every pair is searched: each step's candidates are all of them
    fading = past[:, :-1] + torch.linspace(0, 3, length - 1)[None, :, None] * torch.randn(
        1, length - 1, width, generator=torch.Generator().manual_seed(8)
    )
    _, _, _, pointer = read_block(block, fading, block.init_state(1), memory, tokens[:, :-1])

    _, k, _ = block.project(fading)
    similarity = torch.einsum("td,sd->ts", F.normalize(k, dim=-1)[0], pairs.keys[0])  # (T, stored pairs)
    # Pair s follows pair s - 1, which named tokens[s - 1]: it continues that pair's run when that was the token read.
    scores, sums, lengths = [], None, None
    for t in range(length - 1):
        now_sums, now_lengths = similarity[t].clone(), torch.ones(length)
        if sums is not None:
            for s in range(1, length):
                if tokens[0, s - 1] == tokens[0, t]:
                    now_sums[s] += sums[s - 1]
                    now_lengths[s] += lengths[s - 1]
        sums, lengths = now_sums, now_lengths
        scores.append(torch.maximum(similarity[t], sums / lengths))
    scores = torch.stack(scores)  # (T, stored pairs)
    scale = block.memory_log_scale.exp()[:, None]
    expected = ((scores[:, None] - block.memory_threshold[:, None]) * scale).softmax(-1)  # (T, H, pairs)
    torch.testing.assert_close(
        token_mass(pointer.weights, pointer.tokens, vocab),
        token_mass(expected[None], tokens.expand(length - 1, -1)[None], vocab),
        atol=1e-5,
        rtol=1e-5,
    )
    # The aligned pair's score is the mean of its matches so far, which fade.
    aligned = similarity[torch.arange(length - 1), torch.arange(1, length)]
    assert aligned[-1] < aligned[0] - 0.2
    running_mean = aligned.cumsum(0) / torch.arange(1, length)
    torch.testing.assert_close(
        scores[torch.arange(length - 1), torch.arange(1, length)], torch.maximum(aligned, running_mean)
    )


def recalled_reading_again(model, missing, can_follow):
    """(T, V) head 0's recalled-token mass while reading a stored text again, its pairs `missing` never
    found by search."""
    block = retrieval_block(model)
    past, tokens, pairs = _stored(block, model.config.width, 16, seed=9)
    block.top_k = 2
    memory = Forgetful(model.config.head_dim, missing, can_follow)
    memory.add(pairs.keys, pairs.values)
    _, _, _, pointer = read_block(block, past[:, :-1], block.init_state(1), memory, tokens[:, :-1])
    return token_mass(pointer.weights, pointer.tokens, model.config.vocab_size)[0, :, 0], tokens[0]


@torch.no_grad()
def test_a_pair_the_search_misses_is_reached_by_following_the_run(tiny_model):
    missing = 9  # the pair naming tokens[9]: the right answer at step 8 of reading the text again
    following, tokens = recalled_reading_again(tiny_model, missing, can_follow=True)
    search_alone, _ = recalled_reading_again(tiny_model, missing, can_follow=False)
    right = tokens[missing]
    assert following[missing - 1, right] > 0.99  # the exact repeat's own pair, reached without a search
    assert search_alone[missing - 1, right] < following[missing - 1, right] - 0.5


@torch.no_grad()
def test_a_run_is_followed_through_searches_that_miss_several_times_in_a_row(tiny_model):
    hops = retrieval_block(tiny_model).follow_hops
    missing = range(7, 7 + hops)  # as many misses in a row as a run survives
    recalled, tokens = recalled_reading_again(tiny_model, list(missing), can_follow=True)
    assert all(recalled[i - 1, tokens[i]] > 0.99 for i in missing)
    # One more miss than that: the run is no longer followed.
    last = 7 + hops
    recalled, tokens = recalled_reading_again(tiny_model, list(range(7, last + 1)), can_follow=True)
    assert recalled[last - 1, tokens[last]] < 0.5


@torch.no_grad()
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_reading_with_a_memory_in_chunks_equals_one_pass(tiny_model, chunk):
    """Runs carry across chunk boundaries through the state, so chunking changes nothing."""
    gen = torch.Generator().manual_seed(11)
    text = torch.randint(0, 256, (1, 120), generator=gen)
    memory = TensorMemory(tiny_model.config.head_dim)
    first = tiny_model(text)
    memory.add(*first.memory_kv)
    # Read it again, with the stored text recalled; the same inputs one pass at a time.
    again = text[:, :100] if chunk > 1 else text[:, :40]
    full = tiny_model(again, first.state, memory)
    state, pieces = first.state, []
    for start in range(0, again.shape[1], chunk):
        out = tiny_model(again[:, start : start + chunk], state, memory)
        state = State.from_bytes(out.state.to_bytes())  # and through the stored format
        pieces.append(out.log_probs)
    assert (torch.cat(pieces, dim=1) - full.log_probs).abs().max().item() <= TOLERANCE
    recalled = full.state.layers[tiny_model.config.retrieval_layer].recalled_ids
    assert (recalled >= 0).any(), "the last token recalled nothing: the test would not cover runs"
    for name in ("run_sums", "run_lengths"):
        torch.testing.assert_close(
            getattr(state.layers[tiny_model.config.retrieval_layer], name),
            getattr(full.state.layers[tiny_model.config.retrieval_layer], name),
        )


@torch.no_grad()
@pytest.mark.parametrize("chunk", [1, 3])
def test_runs_followed_through_missed_searches_read_the_same_in_chunks(tiny_model, chunk):
    """Runs at every hop carry across chunk boundaries, whichever levels the chunk itself uses."""
    block = retrieval_block(tiny_model)
    width, length = tiny_model.config.width, 24
    past, tokens, pairs = _stored(block, width, length, seed=14)
    block.top_k = 2
    memory = Forgetful(tiny_model.config.head_dim, [5, 6, 7, 12, 13, 15, 16, 17, 18], can_follow=True)
    memory.add(pairs.keys, pairs.values)
    past, tokens = past[:, :-1], tokens[:, :-1]
    whole = read_block(block, past, block.init_state(1), memory, tokens)
    state, shares, deep = block.init_state(1), [], False
    for start in range(0, length - 1, chunk):
        _, state, _, pointer = read_block(
            block, past[:, start : start + chunk], state, memory, tokens[:, start : start + chunk]
        )
        shares.append(pointer.share_logit)
        deep |= bool((state.recalled_ids[:, 2 * block.top_k :] >= 0).any())
    torch.testing.assert_close(torch.cat(shares, dim=1), whole[3].share_logit)
    assert torch.equal(state.recalled_ids, whole[1].recalled_ids)
    assert deep, "no chunk ended on a run two hops past a search: the test would not cover it"


@torch.no_grad()
def test_memoryless_reading_forgets_what_was_recalled(tiny_model):
    text = torch.randint(0, 256, (1, 60), generator=torch.Generator().manual_seed(12))
    memory = TensorMemory(tiny_model.config.head_dim)
    out = tiny_model(text)
    memory.add(*out.memory_kv)
    recalled = tiny_model(text[:, :30], out.state, memory).state
    forgotten = tiny_model(text[:, 30:31], recalled).state
    layer = tiny_model.config.retrieval_layer
    assert (recalled.layers[layer].recalled_ids >= 0).any()
    assert (forgotten.layers[layer].recalled_ids == -1).all()
    torch.testing.assert_close(run_in_chunks(tiny_model, text, 60), tiny_model(text).log_probs)


def _version_1_blob(state: State, retrieval_layer: int) -> bytes:
    """A state as format 1 stored it: the retrieval block's state was a plain attention state."""
    layers = list(state.layers)
    layers[retrieval_layer] = AttentionState(layers[retrieval_layer].keys, layers[retrieval_layer].values)
    blob = State(layers=tuple(layers), position=state.position).to_bytes()
    payload = blob[_HEADER.size :].replace(b'"retrieval"', b'"attention"')
    return _HEADER.pack(MAGIC, 1, hashlib.blake2b(payload, digest_size=32).digest()) + payload


@torch.no_grad()
def test_a_format_1_state_continues_as_one_that_recalled_nothing(tiny_model):
    text = torch.randint(0, 256, (1, 80), generator=torch.Generator().manual_seed(13))
    memory = TensorMemory(tiny_model.config.head_dim)
    memory.add(*tiny_model(text).memory_kv)
    before = tiny_model(text[:, :50]).state  # read without memory: nothing recalled, as format 1 implied
    old = State.from_bytes(_version_1_blob(before, tiny_model.config.retrieval_layer))
    assert isinstance(old.layers[tiny_model.config.retrieval_layer], AttentionState)
    assert torch.equal(
        tiny_model(text[:, 50:], old, memory).log_probs, tiny_model(text[:, 50:], before, memory).log_probs
    )


def test_tensor_memory_follows_within_a_span_and_past_its_trimming():
    memory = TensorMemory(2, capacity=7)
    memory.add(torch.randn(5, 2), torch.arange(10.0).view(5, 2))  # span: ids 0-4
    memory.add(torch.randn(2, 3, 2), torch.arange(10.0, 22.0).view(2, 3, 2))  # spans: ids 5-7 and 8-10
    assert memory.first_id == 4 and len(memory) == 7  # ids 0-3 were trimmed
    after = memory.follow(torch.tensor([[3, 4, 5, 6, 7, 9, 10, -1]]))
    assert after.ids.tolist() == [[-1, -1, 6, 7, -1, 10, -1, -1]]  # trimmed, span ends, last, none
    assert after.mask.tolist() == [[id >= 0 for id in after.ids[0].tolist()]]
    torch.testing.assert_close(after.values[0, 2], torch.tensor([12.0, 13.0]))  # id 6: the second pair of span 2
    torch.testing.assert_close(after.values[0, 0], torch.zeros(2))


def test_a_one_stream_memory_follows_from_chunk_to_chunk():
    memory = TensorMemory(2, one_stream=True)
    memory.add(torch.randn(1, 3, 2), torch.randn(1, 3, 2))
    memory.add(torch.randn(1, 2, 2), torch.randn(1, 2, 2))
    assert memory.follow(torch.tensor([2, 3, 4])).ids.tolist() == [3, 4, -1]
    with pytest.raises(ValueError, match="one row at a time"):
        memory.add(torch.randn(2, 3, 2), torch.randn(2, 3, 2))
