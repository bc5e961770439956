
import pytest
import torch

from learner.passkey import FillerPool, passkey_eval, recall_passkey
from models import HybridLM, ModelConfig, SamplingConfig, Special, generate

POOL = b"Far out in the uncharted backwaters of the unfashionable end of the western spiral arm. " * 200
OTHER = b"Ask not what your dictionary can do for you. " * 200


def test_the_answer_is_the_greedy_continuation_of_the_document():
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    document = b"The pass key is 12345. Remember it. " + POOL[:500] + b"What is the pass key? The pass key is "
    answer = recall_passkey(model, document, None, chunk_tokens=64)
    greedy = generate(model, torch.tensor([[int(Special.BEGIN), *document]]),
                      sampling=SamplingConfig(temperature=0, max_bytes=5, stop_at_end_of_turn=False,
                                              no_repeat_ngram=0))  # the plain argmax, no repetition guard
    "".join(greedy)
    assert answer == bytes(greedy.tokens).decode("utf-8", errors="replace")


def test_eval_runs_both_modes_on_the_same_trials():
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    pool = FillerPool(POOL + OTHER, starts=(0, len(POOL)), sources=("far", "ask"))
    results = passkey_eval(model, pool, distances=[300], trials={300: 2})
    assert [(r.distance, r.retrieval, r.trials) for r in results] == [(300, True, 2), (300, False, 2)]
    assert results[0].contexts == results[1].contexts and len(results[0].contexts) == 2
    assert all(kind in ("far", "ask", "ask/far", "none") for pair in results[0].contexts for kind in pair)
    assert [a[0] for a in results[0].answers] == [a[0] for a in results[1].answers]  # same keys in both modes
    assert all(0.0 <= r.accuracy <= 1.0 for r in results)
    assert all(len(key) == 5 and key.isdigit() for key, _ in results[0].answers)


def test_a_replayed_trial_answers_what_the_evaluation_answers(tmp_path):
    from bench.passkey_probe import probe_trial
    from learner.passkey import TrialMemory

    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    document = (
        POOL[:700]
        + b"\nThe pass key is 12345. Remember it.\n"
        + POOL[:900]
        + b"\nWhat is the pass key? The pass key is "
    )
    memory = TrialMemory(tmp_path, model.config.head_dim)
    evaluated = recall_passkey(model, document, memory.new_store())
    # The replay reads as the evaluation does, then answers the question once per probe count.
    replayed = probe_trial(model, document, b"12345", memory.new_store(), [10, 0])
    assert replayed["answers"] == {"10": evaluated, "0": evaluated}
    steps = replayed["exact_steps"]
    assert "".join(step["produced"] for step in steps) == evaluated and [s["digit"] for s in steps] == list("12345")
    assert all(
        step["rank"] >= 0 and -1.0 <= step["cosine"] <= 1.0 + 1e-3 and 0.0 <= step["memory_share"] <= 1.0
        for step in steps
    )
    # With only "The pass key is " (16 bytes) before both, statement and question read identical keys.
    context = replayed["context_cosines"]
    assert context["both_fresh"]["16"] == [1.0] * 5
    # Fed the true first digit, the stream's question key is the one the exact search used.
    assert context["question_in_stream"][0] == pytest.approx(steps[0]["cosine"], abs=2e-4)
    memory.engine.dispose()


def test_a_trial_names_the_kinds_of_text_its_statement_and_question_are_read_in():
    pool = FillerPool(b"x" * 100 + b"y" * 100, starts=(0, 100), sources=("ex", "why"))
    assert pool.sources_of(0, 50) == "ex" and pool.sources_of(150, 40) == "why"
    assert pool.sources_of(50, 100) == "ex/why"  # its last 256 bytes reach back into both
    assert pool.sources_of(0, 105, context=10) == "ex/why" and pool.sources_of(0, 95, context=10) == "ex"
    assert pool.sources_of(0, 250, context=10) == "ex"  # a filler longer than the pool repeats it
    assert pool.sources_of(30, 0) == "none"  # nothing before a statement at the document's start


def test_reading_the_question_s_last_byte_as_a_step_changes_only_how_the_document_is_cut(tmp_path):
    from learner.passkey import TrialMemory

    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    document = b"The pass key is 12345. Remember it. " + POOL[:300] + b"What is the pass key? The pass key is "
    # Without a memory, reading in other pieces gives the same stream, so the same answer.
    assert recall_passkey(model, document, None, chunk_tokens=64, question_step=True) == recall_passkey(
        model, document, None, chunk_tokens=64
    )
    memory = TrialMemory(tmp_path, model.config.head_dim)
    store = memory.new_store()
    recall_passkey(model, document, store, chunk_tokens=64, question_step=True)
    assert len(store) == len(document) + 1  # every token's pair stored, the question's last one alone
    memory.engine.dispose()


def test_cross_kind_recall_groups_trials_by_the_kinds_they_are_read_in():
    from bench.cross_kind import digit_odds, run

    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    result = run(model, {"far": POOL, "ask": OTHER}, trials=6, distance=300, seed=0)
    assert result["same"]["trials"] == 2 and result["mixed"]["trials"] == 4
    assert all(0 <= group["all_digits_on_top"] <= group["trials"] for group in result.values())
    assert all(
        0.0 <= group["weakest_digit_p_p10"] <= group["weakest_digit_p_median"] <= 1.0 for group in result.values()
    )
    # The digits are fed, so each is the model's probability for it after the true ones. The document is one
    # chunk, so nothing is stored before the question: the first digit's odds are the memoryless model's.
    document = b"\nThe pass key is 12345.\n" + POOL[:200] + b"\nWhat is the pass key? The pass key is "
    p_right, shares = digit_odds(model, document, b"12345")
    with torch.no_grad():
        logits = model(torch.tensor([[int(Special.BEGIN), *document]]), model.init_state(1), None).log_probs
    assert shares[0] == 0.0 and all(0.0 <= share <= 1.0 for share in shares) and len(p_right) == 5
    assert p_right[0] == pytest.approx(float(torch.softmax(logits[0, -1, :256], -1)[ord("1")]), rel=1e-4)
