"""Does the agent's base model talk? `python -m bench.talk --json` (one JSON object).

For `small` and each installed pretrained model, in one run on this machine:
- bits per byte on held-out English prose: the built corpus' held-out jargon and fortunes
  (`lifelong corpus build`), and a text of the Debian system's own docs (the GPL-3 in
  /usr/share/common-licenses);
- 20 factual prompts with known one-word answers, asked through the chat path (the model's chat
  format, the default sampling, a fresh stream each): the fraction answered, and how many replies
  degenerate (a 4-gram of words repeated more than twice);
- speed at batch 1: prefill tokens/s for 512 tokens, steady-state decode tokens/s and bytes/s, in
  fp32, int8 (imported models' serving weights), int8 decoded through the compiled step (as served:
  models.static_decode) and bf16; the first byte of a chat reply to a 2 KB
  message (p50), as served;
- llama.cpp on the same GGUF file, where `llama-cpp-python` is installed (a benchmark-only extra).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from learner.base import SMALL, load_base
from learner.evaluate import bits_per_byte
from memory.schema import Event
from memory.stream_format import turn_prompt
from models import LanguageModel, SamplingConfig, generate
from models.catalog import CATALOG
from models.quantize import int8_kernel_available, quantize_weights
from models.static_decode import StaticDecoder, static_decoding_fits

SYSTEM_DOC = Path("/usr/share/common-licenses/GPL-3")
PROSE_SOURCES = ("jargon", "fortunes")
# (question, accepted answers): capitals, arithmetic, colours of things and a few other facts.
FACTS = [
    ("What is the capital of France?", ["paris"]),
    ("What is the capital of Japan?", ["tokyo"]),
    ("What is the capital of Italy?", ["rome"]),
    ("What is the capital of Germany?", ["berlin"]),
    ("What is the capital of Spain?", ["madrid"]),
    ("What is the capital of Egypt?", ["cairo"]),
    ("What is the capital of Russia?", ["moscow"]),
    ("What is the capital of England?", ["london"]),
    ("What is 2 + 2?", ["4", "four"]),
    ("What is 3 times 3?", ["9", "nine"]),
    ("What is 10 minus 7?", ["3", "three"]),
    ("What is 5 + 6?", ["11", "eleven"]),
    ("What colour is the sky on a clear day?", ["blue"]),
    ("What colour is grass?", ["green"]),
    ("What colour is fresh snow?", ["white"]),
    ("What colour is a ripe banana?", ["yellow"]),
    ("What colour is coal?", ["black"]),
    ("How many days are in a week?", ["7", "seven"]),
    ("How many legs does a spider have?", ["8", "eight"]),
    ("What is the largest planet in the solar system?", ["jupiter"]),
]


def prose_texts(corpus: Path | None, text_bytes: int) -> dict[str, bytes]:
    from learner.corpus import read_documents

    texts: dict[str, bytes] = {}
    if corpus is not None and (corpus / "manifest.json").is_file():
        for document in read_documents(corpus, "heldout", PROSE_SOURCES):
            taken = texts.get(document.source, b"")
            if len(taken) < text_bytes:
                texts[document.source] = taken + document.data[: text_bytes - len(taken)]
    texts["debian-gpl3"] = SYSTEM_DOC.read_bytes()[:text_bytes]
    return texts


def chat_prompt(model: LanguageModel, message: str) -> torch.Tensor:
    """What the serving runtime reads for a fresh session's first turn."""
    event = Event(seq=0, role="user", content=message.encode(), byte_offset=0)
    return torch.tensor([turn_prompt([event], model.tokenizer, stream_starts=True)])


def degenerate(reply: str, n: int = 4, limit: int = 2) -> bool:
    words = reply.lower().split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return any(count > limit for count in grams.values())


def answered(reply: str, answers: list[str]) -> bool:
    words = set(re.findall(r"[a-z0-9]+", reply.lower()))
    return any(answer in words for answer in answers)


def factual(model: LanguageModel, sampling: SamplingConfig) -> dict:
    rows = []
    for i, (question, answers) in enumerate(FACTS):
        generation = generate(model, chat_prompt(model, question),
                              sampling=SamplingConfig(**{**sampling.__dict__, "seed": i, "max_bytes": 200}))
        reply = "".join(generation)
        rows.append({"question": question, "reply": reply, "correct": answered(reply, answers),
                     "degenerate": degenerate(reply)})
    return {"accuracy": sum(r["correct"] for r in rows) / len(rows),
            "degenerate_replies": sum(r["degenerate"] for r in rows), "replies": rows}


@torch.inference_mode()
def speed(model: LanguageModel, text: bytes, repeats: int = 3, decode_steps: int = 48, decoder=None) -> dict:
    """Prefill and steady-state decoding; `decoder`: what runs the single-token steps (default: the model)."""
    decoder = model if decoder is None else decoder
    tokens = model.tokenizer.encode(text)
    bytes_per_token = len(text) / len(tokens)
    prompt = torch.tensor([tokens[:512]])
    prefill = []
    for _ in range(repeats):
        started = time.perf_counter()
        state = model(prompt, None, last_only=True).state
        prefill.append(time.perf_counter() - started)
    steps, out = [], decoder(torch.tensor([[tokens[512]]]), state, last_only=True)
    for _ in range(decode_steps):
        token = torch.tensor([[int(out.log_probs[0, -1].argmax())]])
        started = time.perf_counter()
        out = decoder(token, out.state, last_only=True)
        steps.append(time.perf_counter() - started)
    decode = 1 / statistics.median(steps[decode_steps // 4 :])  # steady state: after the first steps
    return {"prefill_512_tokens_per_s": round(512 / statistics.median(prefill), 1),
            "decode_tokens_per_s": round(decode, 2), "decode_bytes_per_s": round(decode * bytes_per_token, 2),
            "bytes_per_token": round(bytes_per_token, 3)}


def first_byte_ms(model: LanguageModel, message: bytes, sampling: SamplingConfig, repeats: int = 5) -> float:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        generation = generate(model, chat_prompt(model, message.decode(errors="replace")),
                              sampling=SamplingConfig(**{**sampling.__dict__, "seed": i, "max_bytes": 8}))
        next(iter(generation), None)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def llama_cpp_speed(path: Path, text: bytes, threads: int) -> dict | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_batch=512, verbose=False)
    tokens = llm.tokenize(text, add_bos=False)[: 512 + 48]
    prefill = []
    for _ in range(3):
        llm.reset()
        started = time.perf_counter()
        llm.eval(tokens[:512])
        prefill.append(time.perf_counter() - started)
    steps = []
    for token in tokens[512 : 512 + 48]:  # which token is read does not change the cost of reading it
        started = time.perf_counter()
        llm.eval([token])
        steps.append(time.perf_counter() - started)
    return {"prefill_512_tokens_per_s": round(512 / statistics.median(prefill), 1),
            "decode_tokens_per_s": round(1 / statistics.median(steps[12:]), 2)}


def measure(name: str, texts: dict[str, bytes], message: bytes, sampling: SamplingConfig, threads: int) -> dict:
    """Quality in fp32; the chat path (factual prompts, first byte) as served: int8 weights for an
    imported model (Settings.serving_weights' default)."""
    started = time.perf_counter()
    model = load_base(name)
    result: dict = {"load_s": round(time.perf_counter() - started, 1), "parameters": model.num_params()}
    result["bits_per_byte"] = {source: round(bits_per_byte(model, text, chunk_tokens=256), 4)
                               for source, text in texts.items()}
    result["fp32"] = speed(model, texts["debian-gpl3"])
    served = model
    if model.capabilities.int8_serving and int8_kernel_available():
        served = quantize_weights(copy.deepcopy(model))
        result["int8"] = speed(served, texts["debian-gpl3"])
        if static_decoding_fits(served):  # as served: single-token steps through the compiled step
            result["int8_compiled"] = speed(served, texts["debian-gpl3"],
                                            decoder=StaticDecoder(served).warm_up())
        result["int8"]["bits_per_byte_debian_gpl3"] = round(bits_per_byte(served, texts["debian-gpl3"], 256), 4)
    result["served_as"] = "int8" if served is not model else "fp32"
    result["factual"] = factual(served, sampling)
    result["first_byte_ms_p50_2kb"] = first_byte_ms(served, message, sampling)
    result["bf16"] = speed(copy.deepcopy(model).to(torch.bfloat16), texts["debian-gpl3"])
    if name in CATALOG:
        result["llama_cpp"] = llama_cpp_speed(CATALOG[name].path(), texts["debian-gpl3"], threads)
        if result["llama_cpp"]:
            reference = result["llama_cpp"]["decode_tokens_per_s"]
            result["decode_vs_llama_cpp"] = {
                kind: round(result[kind]["decode_tokens_per_s"] / reference, 3)
                for kind in ("fp32", "int8", "int8_compiled", "bf16") if kind in result}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--corpus", type=Path, default=Path(os.environ.get("LIFELONG_CORPUS", "lifelong-data/corpus")),
                        help="a built corpus (lifelong corpus build) for the held-out prose")
    parser.add_argument("--text-bytes", type=int, default=16_384, help="bytes of each held-out text")
    parser.add_argument("--models", default=",".join([SMALL, *(n for n, m in CATALOG.items() if m.installed())]))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = prose_texts(args.corpus, args.text_bytes)
    message = (b"Please read this and then tell me in one sentence what it is about.\n\n"
               + SYSTEM_DOC.read_bytes()[:2048])[:2048]
    sampling = SamplingConfig()
    report = {"threads": args.threads, "text_bytes": {k: len(v) for k, v in texts.items()},
              "sampling": sampling.__dict__, "models": {}}
    for name in args.models.split(","):
        report["models"][name] = measure(name, texts, message, sampling, args.threads)
        # Progress (and what a long run has measured so far) on stderr; the report on stdout.
        print(name, json.dumps({k: v for k, v in report["models"][name].items() if k != "factual"}),
              file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
