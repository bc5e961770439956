import random

import torch

from learner.memory_key import MemoryKeyFit, collect, contrastive_loss, fit_memory_key, match_report, _batch
from models import HybridLM, ModelConfig


def pool_text() -> bytes:
    rng = random.Random(0)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randrange(2, 8))) for _ in range(300)]
    return b" ".join(rng.choice(words) for _ in range(6000))


FIT = MemoryKeyFit(context_bytes=48, min_passage=12, max_passage=20, pairs_per_batch=6, steps=150,
                   learning_rate=3e-3, queries_per_step=128)


def test_fitting_the_memory_key_makes_a_passage_match_itself_after_other_text():
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    pool = pool_text()
    features = collect(model, pool, batches=4, fit=FIT, seed=0)
    dim = model.config.head_dim
    assert len(features.first) == len(features.second) == 24
    assert features.first[0].shape[-1] == 2 * dim and features.negatives.shape[-1] == 2 * dim
    # Two readings of one passage share its bytes, so their features differ only by what came before.
    assert not torch.equal(features.first[0], features.second[0])

    initial = model.retrieval_block.memory_key.detach()
    weight, history = fit_memory_key(initial, features, FIT)
    queries, keys, targets = _batch(features, torch.Generator().manual_seed(9), 24, FIT)
    assert contrastive_loss(weight, queries, keys, targets) < 0.8 * contrastive_loss(initial, queries, keys, targets)
    assert history[-1] < history[0]
    before, after = match_report(initial, features, FIT), match_report(weight, features, FIT)
    assert after["top1"] > before["top1"]
    assert before["queries"] == after["queries"] > 0
