"""The retrieval block: transitions in, one softmax over local and retrieved pairs."""

import torch
import torch.nn.functional as F

from models import RetrievedMemory, TensorMemory
from models.blocks import BlockContext
from models.pointer import MemoryPointer, mix_pointer


def retrieval_block(model):
    block = model.retrieval_block
    assert block is not None
    return block


def read_block(block, x, state, memory, tokens):
    """The retrieval block alone over normed inputs `x` of `tokens` (its position in the stream is unused)."""
    return block(x, state, BlockContext(position=0, tokens=tokens, memory=memory))


def token_mass(weights, tokens, vocab):
    """(B, T, H, K) weights over pairs naming (B, T, K) tokens -> (B, T, H, V) weight per token."""
    index = tokens[:, :, None].expand(-1, -1, weights.shape[2], -1)
    return torch.zeros(*weights.shape[:3], vocab).scatter_add_(-1, index, weights)


@torch.no_grad()
def test_memory_pointer_is_exact_attention_over_stored_pairs_and_leaves_the_residual_alone(tiny_model):
    block = retrieval_block(tiny_model)
    width, vocab = tiny_model.config.width, tiny_model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    past = torch.randn(1, 40, width, generator=gen)
    now = torch.randn(1, 9, width, generator=gen)
    # No stored pair names a token read now, so no run is followed: recall is by search alone.
    past_tokens, now_tokens = (
        torch.randint(0, 128, (1, 40), generator=gen),
        torch.randint(128, 256, (1, 9), generator=gen),
    )
    block.memory_threshold.copy_(torch.rand(block.heads, generator=gen))

    _, state, past_kv, _ = read_block(block, past, block.init_state(1), None, past_tokens)
    memory = TensorMemory(tiny_model.config.head_dim)
    memory.add(past_kv.keys, past_kv.values)
    block.top_k = len(memory)  # k = number of stored pairs
    plain, _, _, no_pointer = read_block(block, now, state, None, now_tokens)
    out, _, _, pointer = read_block(block, now, state, memory, now_tokens)
    assert no_pointer is None
    assert torch.equal(out, plain)  # memory reaches the output distribution only, never the residual stream

    _, k, _ = block.project(now)
    k = F.normalize(k, dim=-1)  # (1, T, D): the memory is searched with each token's own key
    scale = block.memory_log_scale.exp()[:, None]  # (H, 1)
    scores = (torch.einsum("btd,sd->bts", k, past_kv.keys[0])[:, :, None] - block.memory_threshold[:, None]) * scale
    expected = token_mass(scores.softmax(-1), past_tokens.expand(9, -1)[None], vocab)  # (1, T, H, V)
    torch.testing.assert_close(token_mass(pointer.weights, pointer.tokens, vocab), expected, atol=1e-5, rtol=1e-5)


def test_pointer_mixture_is_a_distribution_that_keeps_the_model_s_own_share():
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 5, 12, generator=gen) * 4
    weights = torch.rand(2, 5, 3, 4, generator=gen).softmax(-1)  # H=3 heads, K=4 pairs
    tokens = torch.randint(0, 12, (2, 5, 4), generator=gen)
    share_logit = torch.randn(2, 5, 3, generator=gen) * 3
    share_logit[0, 0] = float("-inf")  # nothing found at one position
    share_logit[1, 1] = 200.0  # a share that rounds to 1 in fp32

    mixed = mix_pointer(logits, MemoryPointer(share_logit, weights, tokens, ids=tokens, match=torch.ones(2, 5, 4)))

    torch.testing.assert_close(mixed.logsumexp(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    share = torch.sigmoid(share_logit)  # (B, T, H)
    expected = (1 - share.mean(-1, keepdim=True)) * logits.softmax(-1) + token_mass(
        share[..., None] * weights, tokens, 12
    ).mean(2)
    torch.testing.assert_close(mixed.exp(), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mixed[0, 0], logits[0, 0].log_softmax(-1))  # no memory: the model alone
    # However sure the memory is, a token it does not name keeps (1 - share) of the model's probability.
    unnamed = next(v for v in range(12) if v not in tokens[1, 1].tolist())
    assert torch.isfinite(mixed[1, 1, unnamed])
    torch.testing.assert_close(mixed[1, 1, unnamed], logits[1, 1].log_softmax(-1)[unnamed] - 200.0, atol=1e-3, rtol=0)


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
    torch.testing.assert_close(
        torch.cat([first.memory_kv.values, second.values], dim=1), whole.values, atol=1e-5, rtol=1e-5
    )


@torch.no_grad()
def test_a_context_seen_before_retrieves_the_token_that_followed_it(tiny_model):
    block = retrieval_block(tiny_model)
    gen = torch.Generator().manual_seed(5)
    text = torch.randn(1, 20, tiny_model.config.width, generator=gen)
    tokens = torch.randint(0, 256, (1, 20), generator=gen)
    _, _, pairs, _ = read_block(block, text, block.init_state(1), None, tokens)
    memory = TensorMemory(tiny_model.config.head_dim)
    memory.add(pairs.keys, pairs.values)
    block.top_k = 1

    # Reading the same inputs again from a fresh state: token t's key equals the stored key of pair t + 1.
    # Slots: [searched | followed 1, 2, ... hops]; the pair each step would follow is the one its search found.
    _, _, _, pointer = read_block(block, text[:, :19], block.init_state(1), memory, tokens[:, :19])
    assert torch.equal(pointer.tokens[0, :, 0], tokens[0, 1:20])  # the token after each context
    only_the_found = torch.zeros(block.recall_slots)
    only_the_found[0] = 1.0
    torch.testing.assert_close(pointer.weights, only_the_found.expand(1, 19, block.heads, -1))

    # With all of the softmax on memory, the model predicts exactly the tokens that followed.
    model_memory = TensorMemory(tiny_model.config.head_dim)
    model_memory.add(*tiny_model(tokens).memory_kv)
    block.memory_threshold.fill_(-1e4)  # memory scores ~ +inf: all of each head's softmax on memory
    out = tiny_model(tokens[:, :19], memory=model_memory)
    assert torch.equal(out.log_probs[0].argmax(-1), tokens[0, 1:20])
    torch.testing.assert_close(out.log_probs[0].exp().max(-1).values, torch.ones(19))


@torch.no_grad()
def test_empty_memory_or_no_memory_is_plain_local_attention(tiny_model):
    tokens = torch.randint(0, 256, (1, 50), generator=torch.Generator().manual_seed(2))
    without = tiny_model(tokens).log_probs
    empty = tiny_model(tokens, memory=TensorMemory(tiny_model.config.head_dim)).log_probs
    # With a memory the model answers log-probabilities (the pointer mixture); an empty one adds nothing.
    torch.testing.assert_close(empty, without.log_softmax(-1))


@torch.no_grad()
def test_retrieved_memory_changes_predictions_through_the_gate(tiny_model):
    gen = torch.Generator().manual_seed(3)
    history, now = torch.randint(0, 256, (1, 200), generator=gen), torch.randint(0, 256, (1, 20), generator=gen)
    memory = TensorMemory(tiny_model.config.head_dim)
    out = tiny_model(history)
    memory.add(*out.memory_kv)
    plain = tiny_model(now, out.state).log_probs
    recalled = tiny_model(now, out.state, memory).log_probs
    assert not torch.allclose(plain.log_softmax(-1), recalled)
    retrieval_block(tiny_model).memory_threshold.fill_(1e4)  # memory scores ~ -inf: memory contributes nothing
    closed = tiny_model(now, out.state, memory).log_probs
    torch.testing.assert_close(closed, plain.log_softmax(-1), atol=1e-5, rtol=1e-5)


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
