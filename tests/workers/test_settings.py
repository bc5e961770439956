"""Settings read from the environment reach what they configure, and bad values are refused at start."""

import pytest
from pydantic import ValidationError

from memory.index import IndexConfig
from memory.store import StoreConfig
from settings import Settings


def test_memory_probe_count_comes_from_the_environment(monkeypatch, tmp_path):
    assert StoreConfig.serving(Settings(data_dir=tmp_path).memory_nprobe).index.nprobe == IndexConfig().nprobe
    monkeypatch.setenv("LIFELONG_MEMORY_NPROBE", "40")
    assert StoreConfig.serving(Settings(data_dir=tmp_path).memory_nprobe).index.nprobe == 40


def test_a_probe_count_below_one_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("LIFELONG_MEMORY_NPROBE", "0")
    with pytest.raises(ValidationError, match="memory_nprobe"):
        Settings(data_dir=tmp_path)
