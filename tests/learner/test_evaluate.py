import json

import pytest
import torch

from agent.cli import main
from learner.evaluate import ARMS, prequential
from learner.online import LearningConfig
from models import HybridLM, ModelConfig

TEXT = b"The rain in Spain stays mainly in the plain; the plain in Spain is where the rain stays. " * 6


@pytest.fixture
def base() -> HybridLM:
    torch.manual_seed(0)
    return HybridLM(ModelConfig.preset("tiny"))


def test_every_arm_scores_every_byte_once_and_leaves_the_base_untouched(base):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    results = {arm: prequential(base, TEXT, arm=arm, chunk_tokens=64, learning=LearningConfig(learning_rate=0.3))
               for arm in ARMS}
    assert all(r.bytes_scored == len(TEXT) for r in results.values())
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    # The static arm carries state only; its first chunk is what every arm sees first.
    assert len({round(r.chunk_bpb[0], 5) for r in results.values()}) == 1
    # Learning on a repeating text pays off; the static model cannot.
    assert results["learning"].bits_per_byte < results["static"].bits_per_byte
    assert results["both"].bits_per_byte < results["static"].bits_per_byte


def test_cli_reports_all_arms_and_draws_the_plot(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_bytes(TEXT)
    plot = tmp_path / "arms.png"
    code = main(["eval", "stream", str(text), "--preset", "tiny", "--chunk", "64", "--lr", "0.3",
                 "--plot", str(plot), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["bits_per_byte"]) == set(ARMS) and summary["both_over_static"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forgetting_reports_every_held_out_source(tmp_path, base):
    from learner.corpus import SOURCES, build_corpus
    from learner.evaluate import forgetting

    docs = next(s for s in SOURCES if s.name == "python-docs")
    build_corpus(tmp_path / "c", synthetic_per_split={"train": 2, "heldout": 2}, sources=(docs,))
    frozen = forgetting(base, tmp_path / "c", TEXT, learning=LearningConfig(learning_rate=0.0), max_bytes=2_000)
    assert set(frozen) == {"python-docs", "synthetic"}
    assert all(row["ratio"] == 1.0 for row in frozen.values())  # nothing learned, nothing forgotten
    learned = forgetting(base, tmp_path / "c", TEXT * 3, learning=LearningConfig(learning_rate=0.5, trainable="all"),
                         max_bytes=2_000)
    assert any(row["ratio"] != 1.0 for row in learned.values())


def test_cli_passkey_runs_and_plots(tmp_path, capsys):
    from learner.corpus import SOURCES, build_corpus

    docs = next(s for s in SOURCES if s.name == "python-docs")
    build_corpus(tmp_path / "c", synthetic_per_split={"train": 1, "heldout": 1}, sources=(docs,))
    plot = tmp_path / "passkey.png"
    assert main(["eval", "passkey", "--corpus", str(tmp_path / "c"), "--preset", "tiny", "--distances", "200",
                 "--trials", "2", "--plot", str(plot), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [(r["distance"], r["retrieval"], r["trials"]) for r in rows] == [(200, True, 2), (200, False, 2)]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # Each row names its misses, so a failed recall can be examined.
    assert all(len(r["misses"]) == r["trials"] - round(r["accuracy"] * r["trials"]) for r in rows)
    assert all(set(miss) == {"expected", "produced", "stated_in", "asked_after"} for r in rows for miss in r["misses"])
    # One source only: no trial is asked in another kind of text than it was stated in.
    assert all(r["mixed_kinds"] == {"recalled": 0, "trials": 0} for r in rows)
    assert all(miss["asked_after"] == "python-docs" for r in rows for miss in r["misses"])

    assert main(["eval", "passkey", "--corpus", str(tmp_path / "c"), "--preset", "tiny", "--distances", "200",
                 "--trials", "2", "--retrieval", "on", "--plot", str(plot), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [(r["distance"], r["retrieval"]) for r in rows] == [(200, True)]
