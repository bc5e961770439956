"""Our imported models against transformers' own implementations, on the real installed weights:
`python -m bench.import_parity --json` (one JSON object; needs the test extra's transformers).

transformers reads the same GGUF file (its own loader dequantises it); both run in fp32 on the
same tokens, one pass. Reported: the max and mean absolute difference of log-probabilities, and
whether the greedy next tokens agree.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.talk import SYSTEM_DOC
from learner.base import load_base
from models.catalog import CATALOG


@torch.no_grad()
def compare(name: str, tokens_limit: int = 128) -> dict:
    from transformers import AutoModelForCausalLM

    path = CATALOG[name].path()
    ours = load_base(name)
    reference = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     torch_dtype=torch.float32).eval()
    source = SYSTEM_DOC.read_bytes()[:4096]
    tokens = torch.tensor([[ours.tokenizer.chat.document_start[0], *ours.tokenizer.encode(source)][:tokens_limit]])
    expected = reference(tokens).logits.float().log_softmax(-1)
    got = ours(tokens).log_probs
    diff = (got - expected).abs()
    return {"tokens": tokens.shape[1], "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "greedy_agreement": float((got.argmax(-1) == expected.argmax(-1)).float().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--models", default=",".join(n for n, m in CATALOG.items() if m.installed()))
    args = parser.parse_args()
    torch.set_num_threads(2)
    report = {name: compare(name) for name in args.models.split(",") if name}
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
