"""The retrieval block attends exactly over what the memory returns."""

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

    _, state, past_kv = block(past, block.init_state(1), None)
    memory = TensorMemory(tiny_model.config.head_dim)
    memory.add(past_kv.keys, past_kv.values)
    block.top_k = len(memory)  # k = number of stored pairs
    block.forced_gate = 1.0
    out, _, _ = block(now, state, memory)

    q, _, _ = block.project(now)
    q = F.normalize(q, dim=-1)  # (1, T, H, D)
    scale = block.log_scale.exp()[:, None]
    scores = torch.einsum("bthd,sd->bths", q * scale, past_kv.keys[0])
    expected = torch.einsum("bths,sd->bthd", scores.softmax(-1), past_kv.values[0])
    torch.testing.assert_close(out, block.out(expected.flatten(-2)), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_memory_kv_are_unit_keys_of_this_chunk(tiny_model):
    tokens = torch.randint(0, 256, (2, 30), generator=torch.Generator().manual_seed(1))
    kv = tiny_model(tokens).memory_kv
    assert kv.keys.shape == (2, 30, tiny_model.config.head_dim) == kv.values.shape
    torch.testing.assert_close(kv.keys.norm(dim=-1), torch.ones(2, 30))


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
    retrieval_block(tiny_model).gate_bias.fill_(-1e4)  # gate ~ 0: memory contributes nothing
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
