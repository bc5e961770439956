"""What the CPU computes fast: an x86 CPU without bf16 arithmetic never reads prompts in bf16, whatever a timing
under load would say."""

from __future__ import annotations

import models.cpu as cpu


def test_an_x86_cpu_without_bf16_flags_is_never_timed_into_bf16(monkeypatch):
    def no_timing(*_args, **_kwargs):
        raise AssertionError("a CPU without bf16 flags must not be timed")

    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"sse2", "avx", "avx2", "fma"}))
    monkeypatch.setattr(cpu.torch, "randn", no_timing)
    cpu.bf16_products_are_fast.cache_clear()
    try:
        assert cpu.bf16_products_are_fast() is False
    finally:
        cpu.bf16_products_are_fast.cache_clear()

