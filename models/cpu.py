"""What this CPU is, and what it computes fast, measured rather than read from flags (a flag says what exists, not what
PyTorch's kernels make of it)."""

from __future__ import annotations

import functools
import platform
import time
from pathlib import Path

import torch

# bf16 products slower than this many fp32 ones are emulated, not native (measured: 0.5x with AVX-512 BF16,
# about 75x with AVX2 alone; the gap leaves the choice to no timing noise).
EMULATED_BF16_RATIO = 4.0


# x86 flags without which PyTorch's CPU kernels emulate bf16 products (AVX-512 BF16 dot products, AMX tiles).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def bf16_products_are_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices about as fast as fp32 ones or faster. An x86 CPU without the
    flags of bf16 arithmetic never does (no timing: under load a timing once took an AVX2 CPU's 75x slower
    emulation for fast, and every prompt then read at a hundredth of its speed); elsewhere timed once per
    process (a prompt-sized product, best of five; 0.2 s where bf16 is emulated, milliseconds elsewhere)."""
    flags = cpu_flags()
    if flags is not None and "avx2" in flags and not flags & BF16_FLAGS:
        return False
    x, w = torch.randn(64, 512), torch.randn(512, 512)

    def best(a: torch.Tensor, b: torch.Tensor) -> float:
        a @ b  # the first call pays for the kernel's set-up
        times = []
        for _ in range(5):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        return min(times)

    return best(x.bfloat16(), w.bfloat16()) <= EMULATED_BF16_RATIO * best(x, w)


def cpu_name() -> str:
    """The CPU's model name, as the system reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags as Linux reports them; None where it does not (another system)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None
