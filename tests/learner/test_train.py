import random

import torch

from learner.corpus import SOURCES, build_corpus
from learner.train import StreamReader, TrainConfig, Trainer
from models import HybridLM, ModelConfig, Special

DOCS = next(s for s in SOURCES if s.name == "python-docs")
TINY = ModelConfig.preset("tiny")


def corpus(tmp_path):
    build_corpus(tmp_path / "corpus", synthetic_per_split={"train": 4, "heldout": 1}, sources=(DOCS,))
    return tmp_path / "corpus"


def config(**changes) -> TrainConfig:
    base = {
        "batch_size": 2,
        "chunk_tokens": 64,
        "steps": 6,
        "learning_rate": 3e-3,
        "warmup_steps": 2,
        "memory_tokens": 256,
        "bf16": False,
        "checkpoint_every": 3,
    }
    return TrainConfig(**{**base, **changes})


def test_a_tiny_run_lowers_the_loss(tmp_path):
    trainer = Trainer(config(steps=40), corpus(tmp_path), tmp_path / "run", model_config=TINY)
    losses = [trainer.train_step() for _ in range(40)]
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:4]) / 4


def test_resume_continues_identically(tmp_path):
    data = corpus(tmp_path)
    straight = Trainer(config(), data, tmp_path / "a", model_config=TINY)
    straight.run(progress=False)

    interrupted = Trainer(config(steps=3), data, tmp_path / "b", model_config=TINY)
    interrupted.run(progress=False)
    resumed = Trainer(config(), data, tmp_path / "b", model_config=TINY)
    assert resumed.resume() and resumed.step == 3
    resumed.run(progress=False)

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]


def test_streams_mark_documents_and_cover_them_in_order():
    reader = StreamReader([b"abc", b"defgh"], seed=0)
    tokens = reader.take(20)
    first = reader.documents[reader.order[0]]
    assert tokens[0] == Special.DOCUMENT and bytes(tokens[1 : 1 + len(first)]) == first
    assert tokens.count(int(Special.DOCUMENT)) >= 3  # it wraps around: the stream never ends


def train_and_export(tmp_path, data, name: str, steps: int, init: str | None = None, **changes) -> str:
    """Train `steps` steps (from the exported checkpoint `init`, if given) and export; the model card's text."""
    from agent.cli import main

    trainer = Trainer(config(steps=steps, **changes), data, tmp_path / name, model_config=TINY)
    if init:
        trainer.init_from(tmp_path / init)
    trainer.run(progress=False)
    assert (
        main(
            [
                "export-checkpoint",
                str(tmp_path / name),
                str(tmp_path / f"{name}-ckpt"),
                "--corpus",
                str(data),
                "--heldout-bytes",
                "2000",
            ]
        )
        == 0
    )
    return (tmp_path / f"{name}-ckpt" / "MODEL_CARD.md").read_text()


def test_export_writes_weights_and_a_model_card(tmp_path):
    data = corpus(tmp_path)
    card = train_and_export(tmp_path, data, "run", steps=3)
    assert HybridLM.load(tmp_path / "run-ckpt").config == TINY
    assert "python-docs" in card and "steps: 3" in card

    card = train_and_export(tmp_path, data, "tuned", steps=2, init="run-ckpt", recall_weight=20.0)
    assert "steps: 2" in card and "fine-tuned from a base of 3 steps" in card
    assert "recall must produce weighing 20x in the loss" in card

    # A zero-step conversion in between does not hide the base: the card names the 3-step run.
    train_and_export(tmp_path, data, "converted", steps=0, init="run-ckpt")
    card = train_and_export(tmp_path, data, "calibrated", steps=1, init="converted-ckpt")
    assert "steps: 1" in card and "fine-tuned from a base of 3 steps" in card


def test_streams_give_the_same_tokens_whatever_the_chunking():
    documents = [b"abc", b"", b"defgh", b"ij"]
    whole = StreamReader(documents, seed=1).take(40)
    reader = StreamReader(documents, seed=1)
    pieces = [token for size in (1, 1, 3, 2, 1, 5, 7, 20) for token in reader.take(size)]
    assert pieces == whole
    expected = []
    for i in range(20):
        expected += [int(Special.DOCUMENT), *documents[reader.order[i % len(documents)]]]
    assert whole == expected[:40]  # each document once, in the seeded order, behind its marker


def test_a_run_stopped_by_its_time_limit_checkpoints_and_resumes(tmp_path):
    data = corpus(tmp_path)
    stopped = Trainer(config(steps=6, checkpoint_every=100), data, tmp_path / "run", model_config=TINY)
    stopped.run(progress=False, max_seconds=0.0)  # out of time after the first step
    assert stopped.step == 1 and (tmp_path / "run" / "latest").read_text() == "step-0000001"
    resumed = Trainer(config(steps=6), data, tmp_path / "run", model_config=TINY)
    assert resumed.resume() and resumed.step == 1


def test_fine_tuning_starts_from_the_given_weights(tmp_path):
    data = corpus(tmp_path)
    source = Trainer(config(), data, tmp_path / "a", model_config=TINY)
    source.train_step()
    source.model.save(tmp_path / "model")
    tuned = Trainer(config(seed=7), data, tmp_path / "b", model_config=TINY)
    tuned.init_from(tmp_path / "model")
    a, b = source.model.state_dict(), tuned.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and tuned.step == 0


def test_train_only_moves_just_the_named_parameters(tmp_path):
    data = corpus(tmp_path)
    trainer = Trainer(config(steps=2, train_only=("blocks.3.",)), data, tmp_path / "run", model_config=TINY)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run(progress=False)
    after = trainer.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("blocks.3.") for k in moved)


def test_fine_tuning_keeps_fresh_values_for_parameters_the_saved_model_lacks(tmp_path):
    from safetensors.torch import load_file, save_file

    data = corpus(tmp_path)
    source = Trainer(config(), data, tmp_path / "a", model_config=TINY)
    source.model.save(tmp_path / "model")
    weights = load_file(tmp_path / "model" / "model.safetensors")
    new_name = "blocks.3.temporal.memory_log_scale"
    del weights[new_name]  # saved before that parameter existed
    save_file(weights, tmp_path / "model" / "model.safetensors")
    tuned = Trainer(config(seed=7), data, tmp_path / "b", model_config=TINY)
    fresh = tuned.model.state_dict()[new_name].clone()
    tuned.init_from(tmp_path / "model")
    state = tuned.model.state_dict()
    assert torch.equal(state[new_name], fresh)
    assert all(torch.equal(weights[k], state[k]) for k in weights)


def test_a_zero_step_run_still_leaves_a_checkpoint(tmp_path):
    data = corpus(tmp_path)
    trainer = Trainer(config(steps=0), data, tmp_path / "run", model_config=TINY)
    trainer.run(progress=False)
    assert (tmp_path / "run" / "latest").read_text() == "step-0000000"
    saved = HybridLM.load(tmp_path / "run" / "step-0000000" / "model").state_dict()
    assert all(torch.equal(saved[k], v) for k, v in trainer.model.state_dict().items())


def test_streams_mark_the_bytes_a_recall_must_produce():
    from learner.synthetic import passkey_trial

    trial = passkey_trial(b"Plain filler text. " * 40, random.Random(0), 100)
    task, prose = trial.document + trial.key + b".\n", b"The pass key is 12345 in prose is not a recall."
    reader = StreamReader([task, prose], seed=0)
    tokens = reader.take(len(task) + len(prose) + 2)
    marked = bytes(token for token, mark in zip(tokens, reader.recalls, strict=True) if mark)
    assert marked == trial.key  # only the answer to the question, not the statement nor the prose


def test_the_recall_weight_weighs_the_marked_bytes(tmp_path):
    data = corpus(tmp_path)
    weighted = Trainer(config(recall_weight=50.0), data, tmp_path / "w", model_config=TINY)
    batch = weighted.next_batch()
    weighted.streams[1].recalls[10:15] = b"\x01" * 5  # as if a passkey's answer were there
    recalls = torch.tensor([list(stream.recalls) for stream in weighted.streams], dtype=torch.bool)
    logits = torch.randn(*batch[:, :-1].shape, 264)
    log_probs = logits.log_softmax(-1)  # what the model hands the objective
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
    expected = (losses.sum() + 49.0 * losses[recalls].sum()) / (losses.numel() + 49.0 * recalls.sum())
    assert torch.allclose(weighted._objective(log_probs, batch[:, 1:]), expected)
    plain = Trainer(config(), data, tmp_path / "p", model_config=TINY)
    assert torch.equal(plain._objective(log_probs, batch[:, 1:]), losses.mean())


def test_training_on_several_threads_is_deterministic(tmp_path):
    """Parallel accumulation into the embedding's gradient must not depend on thread timing."""
    data, threads = corpus(tmp_path), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = []
        for name in ("a", "b"):
            trainer = Trainer(config(batch_size=4, chunk_tokens=128), data, tmp_path / name, model_config=TINY)
            for _ in range(4):
                trainer.train_step()
            runs.append(trainer.model.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
