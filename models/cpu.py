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


@functools.cache
def bf16_products_are_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices about as fast as fp32 ones or faster; timed once per process
    (a prompt-sized product, best of five; 0.2 s where bf16 is emulated, milliseconds elsewhere)."""
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
