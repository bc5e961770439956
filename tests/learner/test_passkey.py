
import torch

from learner.passkey import passkey_eval, recall_passkey
from models import HybridLM, ModelConfig, SamplingConfig, Special, generate

POOL = b"Far out in the uncharted backwaters of the unfashionable end of the western spiral arm. " * 200


def test_the_answer_is_the_greedy_continuation_of_the_document():
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    document = b"The pass key is 12345. Remember it. " + POOL[:500] + b"What is the pass key? The pass key is "
    answer = recall_passkey(model, document, None, chunk_tokens=64)
    greedy = generate(model, torch.tensor([[int(Special.BEGIN), *document]]),
                      sampling=SamplingConfig(temperature=0, max_bytes=5, stop_at_end_of_turn=False))
    "".join(greedy)
    assert answer == bytes(greedy.tokens).decode("utf-8", errors="replace")


def test_eval_runs_both_modes_on_the_same_trials():
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    results = passkey_eval(model, POOL, distances=[300], trials={300: 2})
    assert [(r.distance, r.retrieval, r.trials) for r in results] == [(300, True, 2), (300, False, 2)]
    assert [a[0] for a in results[0].answers] == [a[0] for a in results[1].answers]  # same keys in both modes
    assert all(0.0 <= r.accuracy <= 1.0 for r in results)
    assert all(len(key) == 5 and key.isdigit() for key, _ in results[0].answers)
