"""Speed of the hybrid model on this machine: `python -m bench.model --json`.

Prints one JSON object: parameter count, inference / generation / training
bytes per second, the matmul peak measured in the same run, training MFU,
the share of a training step spent in the RG-LRU scan, and the flat-cost
ratio (throughput with 64K bytes of history / with none) for the hybrid and
for a full-attention baseline of the same width and depth.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from bench.local_text import stdlib_text
from models import HybridLM, ModelConfig, SamplingConfig, State, compile_decoder, generate
from models.attention import AttentionState
from models.scan import linear_scan

CHUNK = 512
HISTORY = 64 * 1024


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / median_seconds(lambda: a @ b, repeats=7, warmup=2) / 1e9


def tokens_of(data: bytes, batch: int = 1) -> torch.Tensor:
    return torch.tensor(list(data), dtype=torch.long).view(batch, -1)


@torch.inference_mode()
def history_state(model: HybridLM, text: bytes) -> State:
    state = model.init_state(1)
    for start in range(0, len(text), CHUNK):
        state = model(tokens_of(text[start : start + CHUNK]), state).state
    return state


def synthetic_history(model: HybridLM, length: int) -> State:
    """A full-attention state holding `length` random keys/values: the cost of history without a
    quadratic-time prefill (content does not change the cost of attention)."""
    gen = torch.Generator().manual_seed(0)
    layers = []
    for layer in model.init_state(1).layers:
        assert isinstance(layer, AttentionState), "baseline must be attention-only"
        shape = (1, length, model.config.head_dim)
        layers.append(AttentionState(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)))
    return State(layers=tuple(layers), position=length)


@torch.inference_mode()
def infer_bytes_per_s(model: HybridLM, state: State, chunk: torch.Tensor, repeats: int) -> float:
    return chunk.numel() / median_seconds(lambda: model(chunk, state), repeats=repeats)


def generate_bytes_per_s(model: HybridLM, state: State, num_bytes: int, repeats: int, decoder=None) -> float:
    def run() -> int:
        gen = generate(
            model, tokens_of(b"\n"), state=state, decoder=decoder,
            sampling=SamplingConfig(seed=0, max_bytes=num_bytes, stop_at_end_of_turn=False),
        )
        for _ in gen:
            pass
        return len(gen.tokens)

    produced = run()  # warm-up, and the byte count of the timed runs (same seed)
    return produced / median_seconds(run, repeats=repeats, warmup=0)


def matmul_params(model: HybridLM) -> int:
    """Multiply-accumulates per token in weight matmuls (the unembedding included, the lookup not)."""
    total = model.embedding.numel()
    for name, p in model.named_parameters():
        if (name.endswith(".weight") and p.dim() == 2) or name.endswith("gates.w"):  # Dense layers
            total += p.numel()
    return total


def attention_flops_per_sequence(config: ModelConfig, seq: int) -> int:
    """Useful QK and PV flops of the attention blocks for a fresh sequence of `seq` tokens."""
    keys = sum(min(t + 1, config.attention_window + 1) for t in range(seq))
    layers = sum(t != "recurrent" for t in config.block_types)
    return 2 * 2 * config.num_heads * config.head_dim * keys * layers


def train_step(model: HybridLM, optimizer: torch.optim.Optimizer, batch: torch.Tensor, bf16: bool) -> float:
    """One fwd + bwd + AdamW step on (B, T+1) tokens; returns the loss in nats."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(batch[:, :-1])
    loss = model.loss(out.log_probs, batch[:, 1:])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def scan_seconds(model: HybridLM, batch_size: int, seq: int, repeats: int) -> float:
    """Forward + backward time of the RG-LRU scans of one training step."""
    width = model.config.resolved_lru_width
    layers = model.config.block_types.count("recurrent")
    a = torch.rand(batch_size, seq, width).requires_grad_()
    x = torch.randn(batch_size, seq, width).requires_grad_()
    h0 = torch.zeros(batch_size, width)

    def run() -> None:
        for _ in range(layers):
            linear_scan(a, x, h0).sum().backward()

    return median_seconds(run, repeats=repeats)


def bf16_loss_check(config: ModelConfig, text: bytes, batch_size: int, steps: int) -> dict[str, float]:
    """Train one init on the same batches in fp32 and in bf16 autocast; mean loss (nats) of the last 5 steps."""
    batches = tokens_of(text[: steps * batch_size * (CHUNK + 1)], batch=steps * batch_size)
    losses = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        model = HybridLM(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        history = []
        for i in range(steps):
            batch = batches[i * batch_size : (i + 1) * batch_size]
            history.append(train_step(model, optimizer, batch, bf16))
        losses[name] = round(statistics.mean(history[-5:]), 4)
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter runs (a smoke test)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled-decoder figures")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 5
    history = 4 * CHUNK if args.quick else HISTORY
    batch_size = 2 if args.quick else 8

    torch.manual_seed(0)
    config = ModelConfig.preset(args.preset)
    model = HybridLM(config).eval()
    text = stdlib_text(history + 2 * CHUNK)
    chunk = tokens_of(text[history : history + CHUNK])
    result: dict[str, object] = {
        "preset": args.preset, "params": model.num_params(), "threads": torch.get_num_threads(),
    }

    peak = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    result["matmul_peak_gflops"] = {k: round(v, 1) for k, v in peak.items()}

    fresh = model.init_state(1)
    with_history = history_state(model, text[:history])
    result["infer_bytes_per_s"] = round(infer_bytes_per_s(model, fresh, chunk, repeats))
    hybrid_ratio = infer_bytes_per_s(model, with_history, chunk, repeats) / result["infer_bytes_per_s"]

    baseline = HybridLM(config.replace(block_types=("attention",) * config.num_layers, attention_window=1 << 30)).eval()
    baseline_fresh = infer_bytes_per_s(baseline, baseline.init_state(1), chunk, repeats)
    baseline_ratio = infer_bytes_per_s(baseline, synthetic_history(baseline, history), chunk, repeats) / baseline_fresh
    result["flat_cost_ratio"] = {"hybrid": round(hybrid_ratio, 3), "full_attention_baseline": round(baseline_ratio, 3)}
    result["history_bytes"] = history

    gen_bytes = 64 if args.quick else 256
    generation = {
        "eager_history_0": generate_bytes_per_s(model, fresh, gen_bytes, repeats),
        "eager_history_64k": generate_bytes_per_s(model, with_history, gen_bytes, repeats),
    }
    if not args.no_compile:
        decoder = compile_decoder(model)
        start = time.perf_counter()
        generate_bytes_per_s(model, with_history, 8, 1, decoder)  # compile for the steady state
        generate_bytes_per_s(model, fresh, 8, 1, decoder)  # and for a growing window
        result["compile_seconds"] = round(time.perf_counter() - start, 1)
        generation["compiled_history_0"] = generate_bytes_per_s(model, fresh, gen_bytes, repeats, decoder)
        generation["compiled_history_64k"] = generate_bytes_per_s(model, with_history, gen_bytes, repeats, decoder)
    result["generate_bytes_per_s_by_mode"] = {k: round(v) for k, v in generation.items()}
    result["generate_bytes_per_s"] = round(
        min(max(v for k, v in generation.items() if k.endswith(h)) for h in ("history_0", "history_64k"))
    )

    seq_tokens = tokens_of(stdlib_text(batch_size * (CHUNK + 1), skip=history), batch=batch_size)
    train_model = HybridLM(config)
    flops = 3 * (
        2 * matmul_params(train_model) * batch_size * CHUNK + batch_size * attention_flops_per_sequence(config, CHUNK)
    )
    train = {}
    optimizer = torch.optim.AdamW(train_model.parameters(), lr=1e-3)
    for name, bf16 in (("fp32", False), ("bf16", True)):
        seconds = median_seconds(
            lambda bf16=bf16: train_step(train_model, optimizer, seq_tokens, bf16), repeats=max(2, repeats - 2)
        )
        train[name] = {
            "bytes_per_s": batch_size * CHUNK / seconds,
            "seconds_per_step": seconds,
            "mfu": flops / seconds / (peak[name] * 1e9),
        }
    chosen = max(train, key=lambda k: train[k]["bytes_per_s"])
    result["train_dtype"] = chosen
    result["train_batch"] = [batch_size, CHUNK]
    result["train_by_dtype"] = {k: {m: round(v, 3) for m, v in d.items()} for k, d in train.items()}
    result["train_bytes_per_s"] = round(train[chosen]["bytes_per_s"])
    result["train_mfu"] = round(train[chosen]["mfu"], 3)
    result["scan_share"] = round(
        scan_seconds(train_model, batch_size, CHUNK, repeats) / train[chosen]["seconds_per_step"], 3
    )

    if not args.quick:
        result["loss_after_20_steps"] = bf16_loss_check(
            config, stdlib_text(20 * batch_size * (CHUNK + 1)), batch_size, 20
        )

    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
