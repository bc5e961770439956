import json
import random

import pytest

from agent.cli import main
from learner.corpus import SOURCES, Source, assign_splits, build_corpus, read_documents
from learner.synthetic import facts_document, passkey_trial, recall_positions, records_document, synthetic_documents

DOCS = next(s for s in SOURCES if s.name == "python-docs")
MISSING = Source("absent", "none", "/nowhere", lambda: iter(()), lambda: False)


def build(tmp_path, name):
    return build_corpus(
        tmp_path / name, seed=3, synthetic_per_split={"train": 6, "heldout": 3}, sources=(DOCS, MISSING)
    )


def test_build_is_reproducible_and_records_every_source(tmp_path):
    first, second = build(tmp_path, "a"), build(tmp_path, "b")
    assert first == second  # same bytes, same checksums, same split
    by_name = {s["name"]: s for s in first["sources"]}
    assert by_name["absent"] == {
        "name": "absent",
        "licence": "none",
        "origin": "/nowhere",
        "included": False,
        "reason": "not installed on this machine",
    }
    assert by_name["python-docs"]["licence"] == "PSF-2.0"
    assert by_name["python-docs"]["splits"]["heldout"]["documents"] >= 1
    assert by_name["synthetic"]["splits"]["train"]["documents"] == 6


def test_documents_read_back_exactly_and_splits_are_disjoint(tmp_path):
    manifest = build(tmp_path, "c")
    train = list(read_documents(tmp_path / "c", "train", sources=("python-docs",)))
    heldout = list(read_documents(tmp_path / "c", "heldout", sources=("python-docs",)))
    assert {d.name for d in train}.isdisjoint({d.name for d in heldout})
    written = manifest["sources"][0]["splits"]
    assert sum(len(d.data) for d in train) == written["train"]["bytes"]
    assert sum(len(d.data) for d in heldout) == written["heldout"]["bytes"]
    originals = dict(DOCS.documents())
    assert all(originals[d.name] == d.data for d in train + heldout)


def test_every_source_with_two_documents_gets_a_held_out_one():
    names = [f"doc-{i}" for i in range(3)]
    assert "heldout" in assign_splits("tiny", names)
    assert assign_splits("tiny", names) == assign_splits("tiny", names)


def test_synthetic_tasks_state_once_and_ask_later():
    pool = b"All work and no play makes Jack a dull boy. " * 100
    trial = passkey_trial(pool, random.Random(0), distance=3_000)
    document, answer = trial.document, trial.key
    (start, length), (gap_start, gap) = trial.before_statement, trial.before_question
    assert document.startswith(pool[start : start + length] + b"\nThe pass key is " + answer)
    assert pool[gap_start : gap_start + gap] + b"\nWhat is the pass key? The pass key is " in document and gap == 3_000
    assert document.count(answer) == 2  # stated twice in one sentence, never near the question
    assert document.endswith(b"The pass key is ") and len(document) - document.rindex(answer) > 3_000
    facts = facts_document(pool, random.Random(1), facts=4, gap=500).decode()
    for line in facts.splitlines():
        if line.startswith("Q: What is the code for "):
            name, value = line.removeprefix("Q: What is the code for ").split("? A: ")
            assert f"The code for {name} is {value}" in facts


def test_records_are_all_recalled_with_the_values_stated():
    pool = b"All work and no play makes Jack a dull boy. " * 100
    text = records_document(pool, random.Random(2), records=6, gap=300).decode()
    stated = dict(line[1:].split("] = ") for line in text.splitlines() if line.startswith("["))
    recalled = dict(
        line.removeprefix("Recall [").split("]: ") for line in text.splitlines() if line.startswith("Recall")
    )
    assert len(stated) == 6 and recalled == stated


def test_synthetic_kinds_and_distances_are_settings():
    pool = b"filler " * 5000
    documents = list(
        synthetic_documents(pool, count=8, seed=0, kinds=("records", "passkey"), min_distance=64, max_distance=128)
    )
    assert [name.split("-")[0] for name, _ in documents] == ["records", "passkey"] * 4
    assert all(len(doc) < 2_000 + 128 + 200 for name, doc in documents if name.startswith("passkey"))
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        list(synthetic_documents(pool, count=1, seed=0, kinds=("nope",)))


def test_cli_builds_a_corpus(tmp_path, capsys):
    assert main(["corpus", "build", "--out", str(tmp_path / "cli"), "--max-bytes-per-source", "20000", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert (tmp_path / "cli" / "manifest.json").exists()
    assert any(s["name"] == "python-source" and s["included"] for s in manifest["sources"])


def test_every_natural_source_fills_the_synthetic_tasks(tmp_path):
    """A large first source must not crowd the others out of the filler the synthetic tasks are read in."""

    def source(name: str, letter: bytes) -> Source:
        documents = [(f"{name}-{i}", letter * 2048) for i in range(40)]
        return Source(name, "none", "test", lambda: iter(documents), lambda: True)

    build_corpus(
        tmp_path,
        seed=1,
        synthetic_per_split={"train": 12, "heldout": 2},
        synthetic_min_distance=200,
        sources=(source("big", b"a"), source("small", b"b")),
        filler_bytes_per_source=8192,
    )
    synthetic = b"".join(d.data for d in read_documents(tmp_path, "train", sources=("synthetic",)))
    assert synthetic.count(b"b") > 2048
    assert synthetic.count(b"a") > 2048


def test_recall_positions_are_the_values_each_task_asks_for():
    pool = b"All work and no play makes Jack a dull boy. " * 100
    facts = facts_document(pool, random.Random(1), facts=4, gap=200)
    records = records_document(pool, random.Random(2), records=5, gap=300)
    for document, answer in ((facts, "? A: "), (records, "]: ")):
        marks = recall_positions(document)
        marked = [document[i : i + 1] for i in range(len(document)) if marks[i]]
        asked = [line.split(answer)[1].rstrip(".") for line in document.decode().splitlines() if answer in line]
        assert b"".join(marked).decode() == "".join(asked) and len(asked) >= 4
    assert not any(recall_positions(pool))  # prose asks for nothing
