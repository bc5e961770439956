import pytest
import torch

from learner.online import Chunk, LearningConfig, OnlineLearner, gradient_masks, reencode, stream_chunks
from models import HybridLM, ModelConfig, TensorMemory

TEXT = b"It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of folly. "


def fresh_model() -> HybridLM:
    torch.manual_seed(0)
    return HybridLM(ModelConfig.preset("tiny"))


def read(learner: OnlineLearner, data: bytes, chunk: int = 64, memory=None) -> list[float]:
    tokens = torch.tensor([list(data)])
    state, losses = learner.model.init_state(1), []
    for inputs, targets in stream_chunks(tokens, chunk):
        result = learner.step(Chunk(inputs, targets, state), memory)
        state = result.state
        losses.append(result.loss)
        if memory is not None and result.memory_kv is not None:
            memory.add(*result.memory_kv)
    return losses


@pytest.mark.parametrize("trainable", ["downstream", "all"])
def test_learning_a_text_lowers_its_loss_on_the_second_pass(trainable):
    # 3e-3, not larger: at 0.3 the normalized rule's steps made learning chaotic (loss spikes; second pass over
    # first 0.56-1.09 across seeds), and whether this passed turned on the CPU's rounding. At 3e-3 it is 0.47-0.57.
    learner = OnlineLearner(fresh_model(), LearningConfig(learning_rate=3e-3, trainable=trainable, anchor_decay=0.0))
    first = sum(read(learner, TEXT * 3))
    second = sum(read(learner, TEXT * 3))
    assert second < 0.9 * first, (first, second)


@pytest.mark.parametrize("trainable", ["downstream", "all"])
def test_the_normalized_rule_steps_each_tensor_by_the_learning_rate(trainable):
    model = fresh_model()
    learner = OnlineLearner(model, LearningConfig(learning_rate=1e-3, trainable=trainable, anchor_decay=0.0,
                                                  rule="normalized", grad_clip=1e9))
    before = {name: p.detach().clone() for name, p in learner.params.items()}
    read(learner, TEXT[:64])  # one chunk: one step
    for name, param in learner.params.items():
        mask = learner.masks[name]
        moved = param.detach() - before[name]
        entries = moved.numel() if mask is None else int(mask.sum())
        rms = float(moved.square().sum() / entries) ** 0.5
        if rms:  # a parameter the chunk's loss does not reach gets no gradient
            assert rms == pytest.approx(1e-3, rel=1e-3), name
    assert second_pass_is_easier(OnlineLearner(fresh_model(), LearningConfig(
        learning_rate=3e-3, trainable=trainable, anchor_decay=0.0, rule="normalized")))


def second_pass_is_easier(learner: OnlineLearner) -> bool:
    first = sum(read(learner, TEXT * 3))
    return sum(read(learner, TEXT * 3)) < 0.9 * first


def test_learning_rate_zero_leaves_weights_bit_identical():
    model = fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    read(OnlineLearner(model, LearningConfig(learning_rate=0.0)), TEXT * 2, memory=TensorMemory(model.config.head_dim))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_downstream_learning_never_changes_stored_keys():
    model = fresh_model()
    tokens = torch.tensor([list(TEXT)])
    with torch.no_grad():
        keys_before = model(tokens).memory_kv
    # Read with a memory, so gradients also flow through the retrieval path that builds the keys.
    learner = OnlineLearner(model, LearningConfig(learning_rate=0.1, trainable="downstream"))
    read(learner, TEXT * 2, memory=TensorMemory(model.config.head_dim))
    with torch.no_grad():
        keys_after = model(tokens).memory_kv
    assert torch.equal(keys_before.keys, keys_after.keys) and torch.equal(keys_before.values, keys_after.values)


def test_all_learning_makes_keys_stale_and_reencode_refreshes_them():
    model = fresh_model()
    tokens = torch.tensor([list(TEXT)])
    chunks = [inputs for inputs, _ in stream_chunks(tokens, 32)]
    stale = list(reencode(model, chunks))
    read(OnlineLearner(model, LearningConfig(learning_rate=0.1, trainable="all")), TEXT * 2)
    fresh = list(reencode(model, chunks))
    assert not torch.equal(stale[-1].keys, fresh[-1].keys)
    with torch.no_grad():  # re-encoding chunk by chunk equals one pass of the current model
        whole = model(tokens[:, : sum(c.shape[1] for c in chunks)]).memory_kv.keys
    torch.testing.assert_close(torch.cat([kv.keys for kv in fresh], dim=1), whole, atol=1e-5, rtol=1e-5)


def test_anchoring_pulls_weights_back_toward_the_base():
    def drift(decay: float) -> float:
        model = fresh_model()
        learner = OnlineLearner(model, LearningConfig(learning_rate=0.05, anchor_decay=decay))
        read(learner, TEXT * 2)
        return sum((p - learner.base[n]).norm().item() for n, p in learner.params.items())

    assert drift(0.2) < 0.8 * drift(0.0)


def test_downstream_mask_covers_only_what_is_above_the_retrieval_keys():
    model = fresh_model()
    masks = gradient_masks(model, "downstream")
    index = model.config.retrieval_layer
    assert "embedding" not in masks
    assert not any(name.startswith(f"blocks.{index - 1}.") for name in masks)
    assert f"blocks.{index}.temporal_norm.scale" not in masks
    qkv_mask = masks[f"blocks.{index}.temporal.qkv.weight"]
    width = model.config.width
    assert qkv_mask[:, :width].eq(1).all() and qkv_mask[:, width:].eq(0).all()


def test_replay_adds_the_old_chunk_to_the_update():
    model = fresh_model()
    learner = OnlineLearner(model, LearningConfig(learning_rate=0.05, anchor_decay=0.0))
    tokens = torch.tensor([list(TEXT)])
    (old_in, old_tg), (new_in, new_tg) = list(stream_chunks(tokens, 50))[:2]
    old = Chunk(old_in, old_tg, model.init_state(1))

    def loss_on_old() -> float:
        with torch.no_grad():
            return model.loss(model(old.inputs, old.state).log_probs, old.targets).item()

    before = loss_on_old()
    learner.step(Chunk(new_in, new_tg, model.init_state(1)), replay=[old])
    assert loss_on_old() < before


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        LearningConfig(learning_rate=-1)
    with pytest.raises(ValueError):
        LearningConfig(trainable="some")  # type: ignore[arg-type]
