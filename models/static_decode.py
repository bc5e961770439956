"""Decoding one token at a time with fixed shapes: each layer's key/value window as a ring buffer written in
place at an explicit position, so one compiled graph serves every step of a session however long it grows.

The immutable `State` stays what sessions, snapshots and forgetting store: a turn thaws it into a `Ring`
(`Ring.load`), decodes, and freezes the ring back into a `State` (`RingState.freeze`) equal to the one the model's
own `forward` would have made, value for value.

Per layer the ring holds S = sinks + window slots: the stream's first `sinks` keys, then the recent window
(the query itself included), each written at slot sinks + (position - sinks) mod window. Beside the keys as
the state stores them (un-rotated, in the cache's type) it keeps a copy rotated at each key's stream position
and the values, both in fp32, so that a step reads the window once and copies none of it: `forward` concatenates,
casts and rotates the whole window per layer per token (the copies that made decoding at a 2,600-token window
take 1.7x as long as at 512; BENCHMARKS.md, "A compiled decode step"). RoPE angles at stream positions are
computed in fp64, so positions in the millions keep their precision, and a score depends on the distance
between query and key as in `forward`. The sinks are re-rotated each step to where a full window's far end would
see them (models.transformer.Attention).

A step may be taken back once (`models.generate.Generation` does when a token would complete a claim): writing
position p overwrites only the key at p - window, which no query from p on sees. Older states of a ring are not
readable after it moved on, and `RingState` says so rather than reading a window that is gone.

Letters: B batch, H query heads, K key/value heads, S slots, E head dim, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.model import ModelOutput
from models.state import KVState, State
from models.transformer import Attention, TransformerLM


def _trace_inductor_helper_now() -> None:
    """The first time Inductor lowers a graph in a process it traces a helper with torch.fx's symbolic tracer
    (torch._inductor.loop_body.InterpreterShim), which patches every module's `__call__` process-wide while it
    runs: a model read eagerly in another thread at that moment fails with "module is not installed as a
    submodule" (a turn decoding through the model's forward while its step compiles in the background). Traced
    here, when this module is imported, before any compile runs beside a reading thread. Best effort: a torch
    without that helper has nothing to do here."""
    try:
        from torch._inductor.loop_body import InterpreterShim

        InterpreterShim._dummy_gm()  # cached for the process's life
    except (ImportError, AttributeError):
        pass


_trace_inductor_helper_now()


def _angles(positions: torch.Tensor, dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cos and sin (..., dim) of integer `positions` (...), rotate-half layout, angles in fp64."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim))
    angles = positions.to(torch.float64)[..., None] * inv_freq
    cos, sin = angles.cos().float(), angles.sin().float()
    return torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)


def _rotated(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """x (..., T, E) in fp32 rotated at stream `positions` (T,)."""
    cos, sin = _angles(positions, x.shape[-1], base)
    first, second = x.float().chunk(2, dim=-1)
    return x.float() * cos + torch.cat((-second, first), dim=-1) * sin


@dataclass
class LayerRing:
    keys: torch.Tensor  # (B, K, S, E) un-rotated, in the cache's type: what the frozen state holds
    rotated: torch.Tensor  # (B, K, S, E) fp32, rotated at each slot's stream position (sinks: see step)
    values: torch.Tensor  # (B, K, S, E) fp32
    at: torch.Tensor  # (S,) int64 stream position held by each slot, -1 for none


class Ring:
    """One stream's key/value windows for every layer of a `TransformerLM`, written in place."""

    def __init__(self, model: TransformerLM, batch_size: int = 1):
        self.model = model
        dtype = model.cache_dtype or model.dtype
        self.layers: list[LayerRing] = []
        for layer in model.layers:
            attention = layer.attention
            shape = (batch_size, attention.kv_heads, attention.sinks + attention.window, attention.head_dim)
            self.layers.append(LayerRing(
                keys=torch.zeros(shape, dtype=dtype, device=model.device),
                rotated=torch.zeros(shape, dtype=torch.float32, device=model.device),
                values=torch.zeros(shape, dtype=torch.float32, device=model.device),
                at=torch.full(shape[2:3], -1, dtype=torch.long, device=model.device)))
        self.position = 0  # tokens written
        self.tokenizer = model.tokenizer.name

    @torch.no_grad()
    def load(self, state: State) -> RingState:
        """Fill the ring with `state`'s windows; the handle of that state."""
        if state.batch_size != self.layers[0].keys.shape[0]:
            raise ValueError(f"state batch size {state.batch_size} != the ring's {self.layers[0].keys.shape[0]}")
        position = state.position
        for ring, layer, kv in zip(self.layers, self.model.layers, state.layers, strict=True):
            attention = layer.attention
            held = min(attention.sinks, position)
            recent = kv.keys.shape[2] - held
            ring.at.fill_(-1)
            ring.keys.zero_()
            ring.rotated.zero_()
            ring.values.zero_()
            stream = torch.cat((torch.arange(held), torch.arange(position - recent, position))).to(ring.at.device)
            slots = _slots(stream, attention.sinks, attention.window)
            ring.keys[:, :, slots] = kv.keys.to(ring.keys.dtype)
            ring.values[:, :, slots] = kv.values.float()
            ring.rotated[:, :, slots] = _rotated(kv.keys, stream, attention.rope_base)
            ring.at[slots] = stream
        self.position = position
        return RingState(self, position)

    @torch.no_grad()
    def freeze(self, position: int) -> State:
        """The immutable state after `position` tokens: the sinks, then the last window - 1 keys, oldest first."""
        layers = []
        for ring, layer in zip(self.layers, self.model.layers, strict=True):
            attention = layer.attention
            held = min(attention.sinks, position)
            first = max(held, position - (attention.window - 1))
            stream = torch.cat((torch.arange(held), torch.arange(first, position))).to(ring.at.device)
            slots = _slots(stream, attention.sinks, attention.window)
            layers.append(KVState(ring.keys[:, :, slots].clone(), ring.values[:, :, slots].to(ring.keys.dtype)))
        return State(layers=tuple(layers), position=position, tokenizer=self.tokenizer)


def _slots(stream: torch.Tensor, sinks: int, window: int) -> torch.Tensor:
    """The slot of each stream position."""
    return torch.where(stream < sinks, stream, sinks + (stream - sinks) % window)


@dataclass(frozen=True)
class RingState:
    """A ring after `position` tokens; readable while the ring has written at most one token past it."""

    ring: Ring
    position: int

    def check(self) -> None:
        if not self.position <= self.ring.position <= self.position + 1:
            raise ValueError(f"this state is of position {self.position}, but its ring has moved on to "
                             f"{self.ring.position}: the window it read is overwritten")

    def freeze(self) -> State:
        self.check()
        return self.ring.freeze(self.position)


def _attend_step(attention: Attention, ring: LayerRing, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 position: torch.Tensor) -> torch.Tensor:
    """One query (B, H, 1, E) against the layer's ring after writing this token's key and value there."""
    sinks, window, base = attention.sinks, attention.window, attention.rope_base
    at = position.view(1)
    k, v = k.to(ring.keys.dtype), v.to(ring.keys.dtype)  # as `forward` rounds them into the window's type
    slot = torch.where(at < sinks, at, sinks + (at - sinks) % window)
    ring.keys.index_copy_(2, slot, k.to(ring.keys.dtype))
    ring.values.index_copy_(2, slot, v.float())
    ring.rotated.index_copy_(2, slot, _rotated(k, at, base))
    ring.at.index_copy_(0, slot, at)
    if sinks:  # a sink sits where the far end of a full window would see it: at distance far_end - i
        far_end = torch.clamp(at, max=sinks + window - 1)
        sink_at = torch.arange(sinks, device=at.device) + (at - far_end)
        ring.rotated[:, :, :sinks] = _rotated(ring.keys[:, :, :sinks], sink_at, base)
    # Every written slot is visible: a sink, or one of the last `window` positions (writing p overwrote p - window).
    visible = (ring.at >= 0).view(1, 1, 1, -1)
    return F.scaled_dot_product_attention(_rotated(q, at, base), ring.rotated, ring.values, attn_mask=visible,
                                          scale=attention.scale, enable_gqa=True)


def step(model: TransformerLM, rings: list[LayerRing], token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Read `token` (B, 1) at stream `position` (a 0-d int64 tensor), writing each layer's ring in place;
    the next token's log-probabilities (B, 1, V)."""
    x = F.embedding(token, model.embedding)
    if model.config.scale_embeddings:
        x = x * torch.tensor(math.sqrt(model.config.width), dtype=x.dtype)
    for layer, ring in zip(model.layers, rings, strict=True):
        def attend(q, k, v, attention=layer.attention, ring=ring):
            return _attend_step(attention, ring, q, k, v, position)
        x = layer.mixed(x, attend)
    return model.unembed(x).log_softmax(-1)


# One compiled `step` for every decoder of the process: Dynamo keeps its graphs on the function, guarded by the
# model's structure, so a new weight version of the same model (new module objects) reuses the graph.
_compiled_step = torch.compile(step, fullgraph=True, dynamic=False)


def static_decoding_fits(model: object) -> bool:
    """Whether `model` decodes through `StaticDecoder`: a `TransformerLM` (with or without memory layers; memory
    attention, when asked for, still reads through the model's own `forward`)."""
    return isinstance(model, TransformerLM)


class StaticDecoder:
    """`models.generate.Decoder` for a `TransformerLM`: single-token steps through `step` over a ring thawed
    from the first state it is handed, compiled once per model structure (`compiled`). Reads with memory
    attention or of several tokens go to the model's `forward`."""

    def __init__(self, model: TransformerLM, *, compiled: bool = True):
        if not static_decoding_fits(model):
            raise ValueError(f"a static decoder runs a TransformerLM, not a {type(model).__name__}")
        self.model = model
        self.step: Callable[..., torch.Tensor] = _compiled_step if compiled else step

    def __call__(self, tokens: torch.Tensor, state: State | RingState | None, memory=None, *,
                 last_only: bool = False) -> ModelOutput:
        if memory is not None or tokens.shape[1] != 1:  # memory attention searches FAISS: not a fixed shape
            return self.model(tokens, state.freeze() if isinstance(state, RingState) else state, memory,
                              last_only=last_only)
        if isinstance(state, RingState):
            state.check()
            ring, position = state.ring, state.position
        else:
            ring = Ring(self.model, tokens.shape[0])
            state = ring.load(self.model.init_state(tokens.shape[0]) if state is None else state)
            position = state.position
        log_probs = self.step(self.model, ring.layers, tokens, torch.tensor(position, device=tokens.device))
        ring.position = position + 1
        return ModelOutput(log_probs=log_probs, state=RingState(ring, position + 1), memory_kv=None)

    @torch.inference_mode()
    def warm_up(self) -> StaticDecoder:
        """Compile (or fetch from the compile cache) the step for this model's structure, as serving calls it:
        seconds to minutes, so off the request path. Returns itself."""
        self(torch.zeros(1, 1, dtype=torch.long, device=self.model.device), None, last_only=True)
        return self
