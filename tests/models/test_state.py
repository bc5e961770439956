import struct

import pytest
import torch

from models import State, StateFormatError
from models.state import _HEADER


@torch.no_grad()
def test_round_trip_through_bytes_continues_identically(tiny_model):
    tokens = torch.randint(0, 256, (1, 200), generator=torch.Generator().manual_seed(3))
    first = tiny_model(tokens[:, :120])
    restored = State.from_bytes(first.state.to_bytes())
    assert restored.position == 120
    carried = tiny_model(tokens[:, 120:], first.state).log_probs
    resumed = tiny_model(tokens[:, 120:], restored).log_probs
    assert torch.equal(carried, resumed)


def _blob(tiny_model) -> bytes:
    return tiny_model(torch.tensor([[1, 2, 3]])).state.to_bytes()


@torch.no_grad()
def test_other_format_version_is_a_clear_error(tiny_model):
    blob = bytearray(_blob(tiny_model))
    struct.pack_into("<H", blob, 7, 99)
    with pytest.raises(StateFormatError, match="version 99 is not supported"):
        State.from_bytes(bytes(blob))


@torch.no_grad()
def test_corrupted_blob_is_a_clear_error(tiny_model):
    blob = bytearray(_blob(tiny_model))
    blob[-5] ^= 0xFF
    with pytest.raises(StateFormatError, match="corrupted"):
        State.from_bytes(bytes(blob))
    with pytest.raises(StateFormatError, match="shorter than"):
        State.from_bytes(bytes(blob[:10]))
    with pytest.raises(StateFormatError, match="magic"):
        State.from_bytes(b"X" * _HEADER.size + bytes(blob[_HEADER.size :]))


@torch.no_grad()
def test_state_of_another_model_is_rejected(tiny_model):
    from models import HybridLM, ModelConfig

    other = HybridLM(ModelConfig.preset("tiny").replace(block_types=("recurrent", "retrieval")))
    with pytest.raises(ValueError, match="another model"):
        tiny_model(torch.tensor([[1]]), other.init_state(1))
