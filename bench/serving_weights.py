"""Which copy an imported model's prompts read when serving: `python -m bench.serving_weights --json`.

The default base (or `--base`) on this machine, in three forms: fp32; int8 for decoding with a bf16 copy
for prompts; int8 with an fp32 copy for prompts. For each: prefill tokens/s of 512 tokens, steady-state
decode tokens/s (bench.talk's `speed`), and the first byte of a greedy chat reply (p50) to a short
question with a memory note, and to a 2 KB message. Also what `models.cpu.bf16_products_are_fast` says
here, which picks the prompts' copy the service uses (`models.quantize`). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from bench.talk import SYSTEM_DOC, first_byte_ms, speed
from learner.base import default_base, load_base
from models import SamplingConfig
from models.cpu import bf16_products_are_fast, cpu_name
from models.quantize import int8_kernel_available, quantize_weights

GREEDY = SamplingConfig(temperature=0.0)
NOTED_QUESTION = (b"From your memory: The vault combination is 5-2-6-0-1. Remember it.\n\n"
                  b"What is the vault combination?")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="an imported base (default: the default base)")
    args = parser.parse_args(argv)
    spec = args.base or default_base()
    model = load_base(spec)
    if not model.capabilities.int8_serving or not int8_kernel_available():
        raise SystemExit(f"{spec} is not an imported model, or this PyTorch has no int8 kernel")
    text = SYSTEM_DOC.read_bytes()
    forms = {"fp32": model,
             "int8, bf16 prompts": quantize_weights(copy.deepcopy(model), torch.bfloat16),
             "int8, fp32 prompts": quantize_weights(copy.deepcopy(model), torch.float32)}
    report: dict = {"base": spec, "cpu": cpu_name(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "threads": torch.get_num_threads(), "bf16_products_are_fast": bf16_products_are_fast(),
                    "forms": {}}
    for name, served in forms.items():
        result = speed(served, text[:16_384])
        result["first_byte_ms_p50_noted_question"] = first_byte_ms(served, NOTED_QUESTION, GREEDY)
        result["first_byte_ms_p50_2kb"] = first_byte_ms(served, text[:2048], GREEDY, repeats=3)
        report["forms"][name] = result
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
