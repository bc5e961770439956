"""The retrieval block: transitions in, one softmax over local and retrieved pairs."""

import torch
import torch.nn.functional as F

from models import RetrievedMemory, TensorMemory


def retrieval_block(model):
    block = model.retrieval_block
    assert block is not None
    return block


@torch.no_grad()
def test_memory_path_equals_exact_attention_over_stored_pairs(tiny_model):
    block = retrieval_block(tiny_model)
    width = tiny_model.config.width
    gen = torch.Generator().manual_seed(0)
    past = torch.randn(1, 40, width, generator=gen)
    now = torch.randn(1, 9, width, generator=gen)
    past_tokens, now_tokens = torch.randint(0, 256, (1, 40), generator=gen), torch.randint(0, 256, (1, 9), generator=gen)
    block.memory_threshold.copy_(torch.rand(block.heads, generator=gen))

    _, state, past_kv = block(past, block.init_state(1), None, past_tokens)
    memory = TensorMemory(tiny_model.config.head_dim)
    memory.add(past_kv.keys, past_kv.values)
    block.top_k = len(memory)  # k = number of stored pairs
    block.forced_gate = 1.0
    out, _, _ = block(now, state, memory, now_tokens)

    _, k, _ = block.project(now)
    k = F.normalize(k, dim=-1)  # (1, T, D): the memory is searched with each token's own key
    scale = block.memory_log_scale.exp()[:, None]  # (H, 1)
    scores = (torch.einsum("btd,sd->bts", k, past_kv.keys[0])[:, :, None] - block.memory_threshold[:, None]) * scale
    expected = torch.einsum("bths,sd->bthd", scores.softmax(-1), past_kv.values[0])
    # All of the softmax on memory: the window contributes only its projection's bias.
    expected = block.out.bias + block.memory_out(expected.flatten(-2))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_memory_pairs_are_transitions_continued_across_chunks(tiny_model):
    """Pair t: the unit key of token t - 1 (zero before a stream's first token) and token t's code."""
    tokens = torch.randint(0, 256, (2, 30), generator=torch.Generator().manual_seed(1))
    whole = tiny_model(tokens).memory_kv
    assert whole.keys.shape == (2, 30, tiny_model.config.head_dim) == whole.values.shape
    assert torch.equal(whole.keys[:, 0], torch.zeros_like(whole.keys[:, 0]))
    assert torch.equal(whole.values, retrieval_block(tiny_model).token_codes[tokens])
    torch.testing.assert_close(whole.keys[:, 1:].norm(dim=-1), torch.ones(2, 29))

    first = tiny_model(tokens[:, :12])
    second = tiny_model(tokens[:, 12:], first.state).memory_kv
    torch.testing.assert_close(torch.cat([first.memory_kv.keys, second.keys], dim=1), whole.keys, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([first.memory_kv.values, second.values], dim=1), whole.values, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_a_context_seen_before_retrieves_the_token_that_followed_it(tiny_model):
    block = retrieval_block(tiny_model)
    gen = torch.Generator().manual_seed(5)
    text = torch.randn(1, 20, tiny_model.config.width, generator=gen)
    tokens = torch.randint(0, 256, (1, 20), generator=gen)
    _, _, pairs = block(text, block.init_state(1), None, tokens)
    memory = TensorMemory(tiny_model.config.head_dim)
    memory.add(pairs.keys, pairs.values)
    block.top_k, block.forced_gate = 1, 1.0

    # Reading the same inputs again from a fresh state: token t's key equals the stored key of pair t + 1.
    out, _, _ = block(text[:, :19], block.init_state(1), memory, tokens[:, :19])
    followed = block.token_codes[tokens[0, 1:20]]  # (19, D): the code of the token after each context
    expected = block.out.bias + block.memory_out(followed[:, None].expand(-1, block.heads, -1).flatten(-2))[None]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_empty_memory_or_no_memory_is_plain_local_attention(tiny_model):
    tokens = torch.randint(0, 256, (1, 50), generator=torch.Generator().manual_seed(2))
    without = tiny_model(tokens).logits
    empty = tiny_model(tokens, memory=TensorMemory(tiny_model.config.head_dim)).logits
    assert torch.equal(without, empty)


@torch.no_grad()
def test_retrieved_memory_changes_predictions_through_the_gate(tiny_model):
    gen = torch.Generator().manual_seed(3)
    history, now = torch.randint(0, 256, (1, 200), generator=gen), torch.randint(0, 256, (1, 20), generator=gen)
    memory = TensorMemory(tiny_model.config.head_dim)
    out = tiny_model(history)
    memory.add(*out.memory_kv)
    plain = tiny_model(now, out.state).logits
    recalled = tiny_model(now, out.state, memory).logits
    assert not torch.allclose(plain, recalled)
    retrieval_block(tiny_model).memory_threshold.fill_(1e4)  # memory scores ~ -inf: memory contributes nothing
    closed = tiny_model(now, out.state, memory).logits
    torch.testing.assert_close(closed, plain, atol=1e-5, rtol=1e-5)


def test_tensor_memory_top_k_and_mask():
    memory = TensorMemory(4)
    keys = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(4)), dim=-1)
    memory.add(keys, keys * 2)
    queries = keys[None, :2, None]  # (1, 2, 1, 4): each query equals one stored key
    found: RetrievedMemory = memory.search(queries, top_k=8)
    assert found.keys.shape == (1, 2, 1, 8, 4)
    assert found.mask.sum().item() == 2 * 6  # only 6 pairs exist
    torch.testing.assert_close(found.keys[0, :, 0, 0], keys[:2])  # nearest is itself
    torch.testing.assert_close(found.values[0, :, 0, 0], keys[:2] * 2)
