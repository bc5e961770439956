"""Settings read from the environment reach what they configure, and bad values are refused at start."""

import pytest
from pydantic import ValidationError

from memory.index import IndexConfig
from memory.settings import Settings


def test_memory_probe_count_comes_from_the_environment(monkeypatch, tmp_path):
    assert Settings(data_dir=tmp_path).store_config.index.nprobe == IndexConfig().nprobe
    monkeypatch.setenv("LIFELONG_MEMORY_NPROBE", "40")
    assert Settings(data_dir=tmp_path).store_config.index.nprobe == 40


def test_a_probe_count_below_one_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("LIFELONG_MEMORY_NPROBE", "0")
    with pytest.raises(ValidationError, match="memory_nprobe"):
        Settings(data_dir=tmp_path)
