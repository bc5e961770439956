"""How fast the model learns a document against how fast it reads one, with no queue and no SQL:
`python -m bench.learn_speed --json`.

The same chunk events as the worker reads them (`bench.learn.document_chunks`), read by the serving weights
(the prompt path, state carried from chunk to chunk) and learned by the worker's `OnlineLearner` (its
default settings for the base), `--passes` times each, one after the other; then greedy decoding after
512 and 2,600 tokens of context (a full working context), and the serving weights' bits per byte on 16 KB of
other text, with a prompt's attention in the serving type (as shipped) and in fp32. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from agent.serving import load_serving_base
from bench.learn import bare_learning, prefill
from bench.local_text import stdlib_text
from learner.base import learning_config, load_base
from models.cpu import cpu_name
from models.heads import next_token_loss


@torch.inference_mode()
def decode_tokens_per_s(model, tokens: list[int], context: int, steps: int = 64) -> float:
    """Greedy decoding after `context` tokens: the median step, past the first quarter."""
    out = model(torch.tensor([tokens[:context]]), None, last_only=True)
    times = []
    for _ in range(steps):
        token = torch.tensor([[int(out.log_probs[0, -1].argmax())]])
        started = time.perf_counter()
        out = model(token, out.state, last_only=True)
        times.append(time.perf_counter() - started)
    return 1 / statistics.median(times[steps // 4 :])


@torch.inference_mode()
def served_bits_per_byte(model, text: bytes, chunk_tokens: int = 512) -> float:
    """Bits per byte of `text` read as serving reads prompts, in chunks of `chunk_tokens` with the state carried."""
    tokens = torch.tensor([model.tokenizer.encode(text)])
    state, bits = None, 0.0
    for start in range(0, tokens.shape[1] - 1, chunk_tokens):
        targets = tokens[:, start + 1 : start + 1 + chunk_tokens]
        out = model(tokens[:, start : start + targets.shape[1]], state)
        state = out.state
        bits += next_token_loss(out.log_probs, targets).item() * targets.numel() / math.log(2)
    return bits / len(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--bytes", type=int, default=16384, help="length of the document")
    parser.add_argument("--chunk", type=int, default=2048, help="bytes per chunk event")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)

    data = stdlib_text(args.bytes, skip=4 << 20, tests=True)
    learning = learning_config({}, imported=load_base(args.base).capabilities.pretrained)
    passes = []
    for _ in range(args.passes):
        reading = prefill(args.base, data, args.chunk)
        learned, bits = bare_learning(args.base, data, args.chunk, learning)
        passes.append({"prefill_bytes_per_s": round(reading, 1), "learn_bytes_per_s": round(learned, 1),
                       "ratio": round(learned / reading, 3), "prequential_bpb": round(bits, 4)})
    served = load_serving_base(args.base, "cpu").eval()
    tokens = served.tokenizer.encode(stdlib_text(16384, skip=1 << 20))
    heldout = stdlib_text(16384, skip=2 << 20)
    served_bpb = {"as_served": round(served_bits_per_byte(served, heldout), 5)}
    prompt_types = [layer.attention.prompt_dtype for layer in served.layers]
    for layer in served.layers:  # the same weights, a prompt's attention in fp32
        layer.attention.prompt_dtype = None
    served_bpb["fp32_prompt_attention"] = round(served_bits_per_byte(served, heldout), 5)
    for layer, dtype in zip(served.layers, prompt_types, strict=True):
        layer.attention.prompt_dtype = dtype
    report = {"base": args.base, "cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
              "stream_bytes": len(data), "chunk_bytes": args.chunk, "passes": passes,
              "decode_tokens_per_s": {str(context): round(decode_tokens_per_s(served, tokens, context), 1)
                                      for context in (512, 2600)},
              "served_bpb": served_bpb}
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
