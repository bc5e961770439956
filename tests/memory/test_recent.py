"""RecentMemory: what a request just read, searched and followed beside the store."""

from __future__ import annotations

import json.decoder
from pathlib import Path

import torch
import torch.nn.functional as F

from memory.recent import RECENT_ID_BASE, RecentMemory
from models import MemoryKV, ModelOutput, SamplingConfig, Special, TensorMemory, generate
from settings import SHIPPED_CHECKPOINT

DIM = 8


def unit(rows: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)


def read(keys: torch.Tensor) -> ModelOutput:
    """A model output whose chunk's pairs are `keys` (values: the same vectors, for telling them apart)."""
    return ModelOutput(log_probs=torch.zeros(1, 1, 1), state=None, memory_kv=MemoryKV(keys[None], keys[None]))


def test_search_takes_the_best_of_the_store_and_of_what_was_just_read():
    stored, just_read = unit(6, seed=1), unit(4, seed=2)
    store = TensorMemory(DIM)
    store.add(stored, stored)
    memory = RecentMemory(store, DIM)
    queries = unit(5, seed=3).view(1, 5, 1, DIM)
    assert torch.equal(memory.search(queries, 3).ids, store.search(queries, 3).ids)  # nothing read yet
    memory.remember(read(just_read))
    found = memory.search(queries, 3)
    every = torch.cat([stored, just_read])
    best = (queries[0, :, 0] @ every.T).topk(3, dim=-1).indices  # (5, 3) positions among all ten
    expected_ids = torch.where(best < 6, best, best - 6 + RECENT_ID_BASE)
    assert torch.equal(found.ids[0, :, 0], expected_ids) and found.mask.all()
    assert torch.equal(found.keys[0, :, 0], every[best]) and torch.equal(found.values[0, :, 0], every[best])


def test_following_goes_on_in_the_store_or_in_what_was_just_read():
    store = TensorMemory(DIM)
    store.add(unit(3, seed=4), unit(3, seed=4))  # one span: 0 -> 1 -> 2
    memory = RecentMemory(store, DIM)
    memory.remember(read(unit(2, seed=5)))
    memory.remember(read(unit(1, seed=6)))  # continues the read before it
    ids = torch.tensor([[0, 2, RECENT_ID_BASE, RECENT_ID_BASE + 1, RECENT_ID_BASE + 2, -1]])
    found = memory.follow(ids)
    assert found.ids.tolist() == [[1, -1, RECENT_ID_BASE + 1, RECENT_ID_BASE + 2, -1, -1]]
    assert torch.equal(found.keys[0, 3], memory.recent.keys[2]) and torch.equal(found.keys[0, 0], store.keys[1])


def test_a_reply_recalls_what_the_message_it_answers_stated_a_moment_before():
    from learner.base import load_base

    model = load_base(str(SHIPPED_CHECKPOINT))
    filler = Path(json.decoder.__file__).read_bytes()
    document = (filler[:600] + b"\nThe pass key is 41326. Remember it. 41326 is the pass key.\n" + filler[600:700]
                + b"\nWhat is the pass key? The pass key is ")
    memory = RecentMemory(TensorMemory(model.config.head_dim), model.config.head_dim)
    recalled = []

    def remember(out: ModelOutput) -> None:
        memory.remember(out)
        recalled.append(bool((out.pointer.ids >= RECENT_ID_BASE).any()))

    reply = generate(model, torch.tensor([[int(Special.BEGIN), *document]]), memory=memory, on_read=remember,
                     sampling=SamplingConfig(temperature=0, max_bytes=5, stop_at_end_of_turn=False))
    assert "".join(reply) == "41326"
    # Read in two parts: everything before the question's last byte, then that byte; then one read per token.
    assert len(recalled) == 2 + 5 and not recalled[0] and all(recalled[1:])
