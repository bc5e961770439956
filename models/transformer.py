"""Pretrained decoder-only transformers (Llama and Gemma 3 families), streamed like the project's own
model: the same call, `model(tokens, state, memory) -> ModelOutput`, and a typed state per layer.

    tokens -> embed [x sqrt(width)] -> [TransformerLayer] * L -> RMSNorm -> tied unembed [-> soft cap]
    layer:  x + [post_norm](attention(norm(x))), then x + [post_norm](mlp(norm(x)))

Streaming state: each layer keeps the un-rotated keys and the values of its last window of tokens
(a sliding layer: its trained window; a global layer: `context_tokens`, the bound that keeps an
infinite session's memory and time per token flat; beyond it lifelong's memory takes over). Keys
are rotated at use time relative to the oldest kept token: scores depend only on position
differences, so this equals the reference's absolute RoPE while angles stay small forever.

Norm weights are stored as the multiplier itself: Gemma's (1 + w) is folded in when imported
(GGUF files already store it so). Letters: B batch, T new tokens, C cached tokens, S keys,
H query heads, K key/value heads, E head dim, D width, V vocabulary.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.adapters import PROJECTIONS, add_adapters
from models.capabilities import Capabilities
from models.heads import next_token_loss, soft_cap
from models.layer_memory import LayerMemoryReader, Recalled
from models.layers import Dense
from models.memory import MemoryKV
from models.model import ModelOutput
from models.rotary import rotate, rotate_any, rotate_at
from models.state import KVState, State, layer_kind
from models.tokenizer import Tokenizer
from models.transformer_config import TransformerConfig


class Norm(nn.Module):
    """RMSNorm computed in fp32, scaled by its stored multiplier."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), weight=self.weight.float(), eps=self.eps).type_as(x)


class Attention(nn.Module):
    """Grouped-query attention over the layer's window. A global layer also keeps the stream's first
    `sink_tokens` keys for good (attention sinks, as in StreamingLLM): pretrained models park attention
    on a stream's first tokens, and lose their footing once a plain window drops them. A query sees
    a sink at the distance it would have at the far end of a full window, so its scores never
    reach distances the model was not trained on, and are the same however the stream is chunked."""

    def __init__(self, config: TransformerConfig, layer: int):
        super().__init__()
        c = config
        self.heads, self.kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.sinks = 0 if c.sliding_layers[layer] else c.sink_tokens
        self.window = c.window(layer) - self.sinks  # recent keys a query sees, itself included
        self.rope_base = c.local_rope_base if c.sliding_layers[layer] else c.rope_base
        self.scale = c.query_scale if c.query_scale is not None else c.head_dim**-0.5
        self.q = Dense(c.width, c.num_heads * c.head_dim, bias=False)
        self.k = Dense(c.width, c.num_kv_heads * c.head_dim, bias=False)
        self.v = Dense(c.width, c.num_kv_heads * c.head_dim, bias=False)
        self.out = Dense(c.num_heads * c.head_dim, c.width, bias=False)
        self.qkv: nn.Module | None = None  # the three projections fused, when serving
        self.q_norm = Norm(c.head_dim, c.norm_eps) if c.qk_norm else None
        self.k_norm = Norm(c.head_dim, c.norm_eps) if c.qk_norm else None
        # A memory layer's first channel (models.layer_memory); None: not a memory layer.
        self.first_channel = c.memory_layers.index(layer) * c.num_kv_heads if layer in c.memory_layers else None
        self.top_k, self.exact_positions = c.memory_top_k, c.memory_positions == "exact"
        # What attention computes in while reading several tokens with no memory (a prompt, a chunk): None, the
        # activations' type; serving sets bf16 where its products are bf16 (models.quantize).
        self.prompt_dtype: torch.dtype | None = None

    def init_state(self, batch_size: int, device: torch.device | str | None, dtype: torch.dtype) -> KVState:
        empty = torch.zeros(batch_size, self.kv_heads, 0, self.head_dim, device=device, dtype=dtype)
        return KVState(empty, empty.clone())

    def forward(self, x: torch.Tensor, state: KVState, position: int,
                memory: LayerMemoryReader | None = None) -> LayerOutput:
        """`position`: tokens of the stream read before this chunk. `memory` is read by memory layers only."""
        T = x.shape[1]
        q, k, v = self.project(x)
        k, v = k.to(state.keys.dtype), v.to(state.values.dtype)  # the window's storage type (cache_dtype)
        # The state holds the sinks read so far, then recent keys contiguous in the stream; this
        # chunk's first tokens are sinks too while the stream is young.
        held = min(self.sinks, position)
        fresh = min(self.sinks, position + T) - held
        cached_recent = state.keys.shape[2] - held
        first = position - cached_recent if cached_recent else position + fresh  # stream position of recent[0]
        sink_keys = torch.cat((state.keys[:, :, :held], k[:, :, :fresh]), 2)
        sink_values = torch.cat((state.values[:, :, :held], v[:, :, :fresh]), 2)
        keys = torch.cat((state.keys[:, :, held:], k[:, :, fresh:]), 2)
        values = torch.cat((state.values[:, :, held:], v[:, :, fresh:]), 2)
        if self.first_channel is None:
            memory = None
        mixed, recalled = self._attend(q, position, keys, values, first, sink_keys, sink_values, memory)
        keep = self.window - 1  # recent keys the next token's query can still see besides itself
        start = max(0, keys.shape[2] - keep)
        new_state = KVState(torch.cat((sink_keys, keys[:, :, start:]), 2),
                            torch.cat((sink_values, values[:, :, start:]), 2))
        # A memory layer's pairs of this chunk, (B, T, K, E) each, for the memory store.
        pairs = None if self.first_channel is None else MemoryKV(k.transpose(1, 2), v.transpose(1, 2))
        return LayerOutput(self.output(mixed), new_state, pairs, recalled)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, H, T, E), keys and values (B, K, T, E) of x (B, T, D), normed where the model norms them."""
        B, T, _ = x.shape
        if self.qkv is not None:  # serving: one product for the three (models.quantize)
            q, k, v = self.qkv(x).split([self.heads * self.head_dim, *(2 * [self.kv_heads * self.head_dim])], -1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = q.reshape(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = k.reshape(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def output(self, mixed: torch.Tensor) -> torch.Tensor:
        """The heads' mix (B, H, T, E) projected back to the width, (B, T, D)."""
        B, _, T, _ = mixed.shape
        return self.out(mixed.transpose(1, 2).reshape(B, T, -1))

    def _attend(self, q: torch.Tensor, position: int, keys: torch.Tensor, values: torch.Tensor, first: int,
                sink_keys: torch.Tensor, sink_values: torch.Tensor,
                memory: LayerMemoryReader | None) -> tuple[torch.Tensor, Recalled | None]:
        """Keys and values compute in `q`'s type."""
        T, device, sinks = q.shape[2], q.device, sink_keys.shape[2]
        if memory is None and T > 1 and self.prompt_dtype not in (None, q.dtype):
            q_prompt = q.to(self.prompt_dtype)
            mixed, _ = self._attend(q_prompt, position, keys, values, first, sink_keys, sink_values, None)
            return mixed.to(q.dtype), None
        query_at = torch.arange(position, position + T, device=device)[:, None]  # stream positions
        # Keys this chunk pushed out of the window are in no memory yet, so with one its queries still see them.
        mask = _visible(position, T, first, keys.shape[2], sinks, None if memory is not None else self.window,
                        device, torch.is_inference_mode_enabled())
        # Rotated relative to the oldest recent key: the same scores as absolute positions, small angles.
        keys, values = keys.to(q.dtype), values.to(q.dtype)
        sink_keys, sink_values = sink_keys.to(q.dtype), sink_values.to(q.dtype)
        q_recent, k_recent = rotate(q, position - first, self.rope_base), rotate(keys, 0, self.rope_base)
        if sinks == 0 and memory is None:
            return F.scaled_dot_product_attention(q_recent, k_recent, values, attn_mask=mask, scale=self.scale,
                                                  enable_gqa=True), None
        # Sinks: query at min(q, sinks + window - 1), sink i at i (its position in a full window).
        group = self.heads // self.kv_heads
        far_end = query_at[:, 0] if self.exact_positions else query_at[:, 0].clamp(max=self.sinks + self.window - 1)
        if memory is None and T == 1:  # one query (decoding): the sinks turned to its frame, at their distance
            k_sink = rotate(sink_keys, position - first - int(far_end[0]), self.rope_base)
            return F.scaled_dot_product_attention(q_recent, torch.cat((k_sink, k_recent), 2),
                                                  torch.cat((sink_values, values), 2), attn_mask=mask,
                                                  scale=self.scale, enable_gqa=True), None
        q_sink = rotate_at(q, far_end, self.rope_base)
        k_sink = rotate(sink_keys, 0, self.rope_base)
        if memory is None:
            return _sinks_and_recent(q_sink, k_sink, sink_values, q_recent, k_recent, values, mask, self.scale), None
        parts = [_grouped_scores(q_sink, k_sink, group), _grouped_scores(q_recent, k_recent, group)]
        masks = [mask[:, :sinks], mask[:, sinks:]]
        found = self._search(q, memory, far_end, query_at[:, 0], first)
        parts.insert(1, found.scores)  # between the sinks and the recent keys
        masks.insert(1, found.mask)
        scores = torch.cat(parts, -1) * self.scale
        mask = torch.cat([m.expand(*scores.shape[:-1], m.shape[-1]) for m in masks], -1)
        weights = scores.masked_fill(~mask, float("-inf")).float().softmax(-1).to(q.dtype)
        recent, total = keys.shape[2], weights.shape[-1]
        out = (_grouped_mix(weights[..., :sinks], sink_values, group)
               + _grouped_mix(weights[..., total - recent :], values, group))
        from_memory = weights[..., sinks : total - recent]
        out = out + torch.einsum("bhtk,bhtke->bhte", from_memory, found.values)
        return out, Recalled(found.ids, from_memory.detach())

    def _search(self, q: torch.Tensor, memory: LayerMemoryReader, far_end: torch.Tensor, query_at: torch.Tensor,
                first: int) -> _Found:
        """The top-k stored pairs of each query head and their scores (before `scale`), (B, H, T, K, ...)."""
        group = q.shape[1] // self.kv_heads
        # Where a retrieved pair sits (models.layer_memory): at the window's far edge from the query.
        edge = torch.minimum(far_end, torch.full_like(far_end, self.window - 1))  # (T,)
        q_search = rotate_at(q, edge, self.rope_base)  # (B, H, T, E): q_search . key = the edge score
        found, positions = [], []
        for head in range(self.kv_heads):
            heads = q_search[:, head * group : (head + 1) * group].transpose(1, 2)  # (B, T, G, E)
            pairs, at = memory.search_channel(self.first_channel + head, heads, self.top_k,
                                              stream_range=(self.sinks, first))
            found.append(pairs)
            positions.append(at)

        def joined(parts: list[torch.Tensor]) -> torch.Tensor:  # (B, T, G, K, ...) per head -> (B, H, T, K, ...)
            return torch.cat(parts, 2).transpose(1, 2)

        keys, values = joined([f.keys for f in found]).to(q.dtype), joined([f.values for f in found]).to(q.dtype)
        mask, ids = joined([f.mask for f in found]), joined([f.ids for f in found])
        positions = None if any(at is None for at in positions) else joined(positions)
        if self.exact_positions and positions is not None:
            # The reading stream's own pairs at their true distance, others at the edge.
            distance = torch.where(positions >= 0, query_at[:, None] - positions, edge[:, None])  # (B, H, T, K)
            rotated = rotate_any(q[:, :, :, None].expand(-1, -1, -1, distance.shape[-1], -1), distance, self.rope_base)
            scores = (rotated * keys).sum(-1)
        else:
            scores = torch.einsum("bhte,bhtke->bhtk", q_search, keys)
        return _Found(scores, values, mask, ids)


class _Found(NamedTuple):
    scores: torch.Tensor  # (B, H, T, K) before the layer's scale
    values: torch.Tensor  # (B, H, T, K, E)
    mask: torch.Tensor  # (B, H, T, K)
    ids: torch.Tensor  # (B, H, T, K)


class LayerOutput(NamedTuple):
    x: torch.Tensor
    state: KVState
    pairs: MemoryKV | None  # a memory layer's pairs of the chunk, (B, T, K, E) each
    recalled: Recalled | None  # what a memory layer weighed from memory


@functools.lru_cache(maxsize=4)
def _visible(position: int, length: int, first: int, recent: int, sinks: int, window: int | None,
             device: torch.device, inference: bool) -> torch.Tensor:
    """(length, sinks + recent): which keys each of a chunk's queries sees (the stream's first `sinks` keys
    once read, then the recent keys from stream position `first`, up to the query itself and no further back
    than `window`). Every layer of a window computes the same one, so it is made once (a few milliseconds a
    layer at a 2,048-token window); `inference` keeps a mask made under inference mode out of computations
    autograd records (an op that saved one for its gradient would fail). Never written in place."""
    query_at = torch.arange(position, position + length, device=device, dtype=torch.int32)[:, None]
    key_at = torch.arange(first, first + recent, device=device, dtype=torch.int32)[None, :]
    visible = key_at <= query_at
    if window is not None:
        visible &= key_at > query_at - window
    if not sinks:
        return visible
    return torch.cat((torch.arange(sinks, device=device, dtype=torch.int32)[None, :] <= query_at, visible), 1)


def _sinks_and_recent(q_sink: torch.Tensor, k_sink: torch.Tensor, sink_values: torch.Tensor, q_recent: torch.Tensor,
                      k_recent: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """One fused attention over the sinks and the recent keys, (B, H, T, E), though each part sees the query
    rotated differently: queries and keys are laid side by side in twice the head size, a sink key against
    zeros where the recent query sits and a recent key against zeros where the sink query sits, so every
    score is the one its own part would give. Values are padded to the same size, which keeps the
    computation in PyTorch's fused kernel (the scores are never written out): at a 2,048-token window, reading
    went 2x and learning 1.8x faster than with scores, mask and softmax op by op (BENCHMARKS.md, "Learning at
    reading speed")."""
    E = q_recent.shape[-1]
    q = torch.cat((q_sink, q_recent), -1)
    k = torch.cat((F.pad(k_sink, (0, E)), F.pad(k_recent, (E, 0))), 2)
    v = F.pad(torch.cat((sink_values, values), 2), (0, E))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)[..., :E]


def _grouped_scores(q: torch.Tensor, k: torch.Tensor, group: int) -> torch.Tensor:
    """q (B, H, T, E) against k (B, K, S, E), H = K * group: (B, H, T, S)."""
    B, H, T, E = q.shape
    scores = q.view(B, H // group, group, T, E) @ k.unsqueeze(2).transpose(-1, -2)
    return scores.view(B, H, T, -1)


def _grouped_mix(weights: torch.Tensor, v: torch.Tensor, group: int) -> torch.Tensor:
    B, H, T, S = weights.shape
    return (weights.view(B, H // group, group, T, S) @ v.unsqueeze(2)).view(B, H, T, -1)


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.gate = Dense(config.width, config.mlp_width, bias=False)
        self.up = Dense(config.width, config.mlp_width, bias=False)
        self.down = Dense(config.mlp_width, config.width, bias=False)
        self.activation = config.activation
        self.gate_up: nn.Module | None = None  # gate and up fused, when serving

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up is not None:  # serving: one product for both (models.quantize)
            gate, up = self.gate_up(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate(x), self.up(x)
        gate = F.silu(gate) if self.activation == "silu" else F.gelu(gate, approximate="tanh")
        return self.down(gate * up)


class TransformerLayer(nn.Module):
    def __init__(self, config: TransformerConfig, layer: int):
        super().__init__()
        width, eps = config.width, config.norm_eps
        self.attention_norm = Norm(width, eps)
        self.attention = Attention(config, layer)
        self.mlp_norm = Norm(width, eps)
        self.mlp = MLP(config)
        self.post_attention_norm = Norm(width, eps) if config.sandwich_norms else None
        self.post_mlp_norm = Norm(width, eps) if config.sandwich_norms else None

    def forward(self, x: torch.Tensor, state: KVState, position: int,
                memory: LayerMemoryReader | None = None) -> LayerOutput:
        attended = self.attention(self.attention_norm(x), state, position, memory)
        return attended._replace(x=self._after_attention(x, attended.x))

    def mixed(self, x: torch.Tensor, attend: Callable[..., torch.Tensor]) -> torch.Tensor:
        """The layer's output with attention given as `attend(q, k, v) -> (B, H, T, E)` (models.static_decode)."""
        attention = self.attention
        return self._after_attention(x, attention.output(attend(*attention.project(self.attention_norm(x)))))

    def _after_attention(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        if self.post_attention_norm is not None:
            mixed = self.post_attention_norm(mixed)
        x = x + mixed
        update = self.mlp(self.mlp_norm(x))
        if self.post_mlp_norm is not None:
            update = self.post_mlp_norm(update)
        return x + update


class TransformerLM(nn.Module):
    """An imported pretrained model; its memory layers (if any) read a `LayerMemoryReader`."""

    retrieval_block = None

    def __init__(self, config: TransformerConfig, tokenizer: Tokenizer):
        super().__init__()
        self.config, self.tokenizer = config, tokenizer
        self.embedding = nn.Parameter(torch.zeros(config.vocab_size, config.width))
        self.layers = nn.ModuleList(TransformerLayer(config, i) for i in range(config.num_layers))
        self.final_norm = Norm(config.width, config.norm_eps)
        self.unembedding: nn.Module | None = None  # an int8 copy of the output layer (models.quantize)
        # How the key/value windows are stored (None: as the weights); serving stores bf16, half the
        # bytes in RAM and in each session's SQL row, with the same values in both, so restarts stay exact.
        self.cache_dtype: torch.dtype | None = None

    @property
    def device(self) -> torch.device:
        return self.embedding.device

    def use_memory_layers(self, layers: tuple[int, ...]) -> None:
        """Make `layers` (global ones) the memory layers, and no other."""
        if any(self.config.sliding_layers[i] for i in layers):
            raise ValueError(f"memory layers must be global layers; {layers} includes a sliding one")
        self.config = self.config.replace(memory_layers=tuple(layers))
        for i, layer in enumerate(self.layers):
            attention = layer.attention
            attention.first_channel = layers.index(i) * attention.kv_heads if i in layers else None

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.dtype

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size: int = 1) -> State:
        dtype = self.cache_dtype or self.dtype
        layers = tuple(layer.attention.init_state(batch_size, self.device, dtype) for layer in self.layers)
        return State(layers=layers, position=0, tokenizer=self.tokenizer.name)

    def forward(self, tokens: torch.Tensor, state: State | None = None, memory: LayerMemoryReader | None = None,
                *, last_only: bool = False) -> ModelOutput:
        """`last_only`: log-probabilities of the last position only, (B, 1, V) (prompt reads).
        `memory`: what the memory layers search (models.layer_memory); without it they see their window."""
        state = self._checked_state(tokens, state)
        x, outs = self._read(tokens, state, memory, len(self.layers))
        if last_only:
            x = x[:, -1:]
        logits = self.unembed(x)
        new_state = State(layers=tuple(out.state for out in outs), position=state.position + tokens.shape[1],
                          tokenizer=self.tokenizer.name).detach()
        pairs = [out.pairs for out in outs if out.pairs is not None]
        # Every memory layer's pairs of each token side by side: (B, T, channels, E).
        memory_kv = MemoryKV(torch.cat([p.keys for p in pairs], 2).detach(),
                             torch.cat([p.values for p in pairs], 2).detach()) if pairs else None
        return ModelOutput(log_probs=logits.log_softmax(-1), state=new_state, memory_kv=memory_kv,
                           recalled=tuple(out.recalled for out in outs if out.recalled is not None) or None)

    capabilities = Capabilities(memory="memory_layers", pretrained=True, notes_in_context=True, int8_serving=True,
                                windowed_state=True)

    def downstream_masks(self) -> dict[str, torch.Tensor | None]:
        """What may learn while stored pairs stay valid: the norm scales of the layers above the last memory
        layer, and the final norm. Nothing that computes a stored key or value, and a weight version is a
        few kilobytes (the layers' matrices would make it tens of megabytes; BENCHMARKS.md, "Recall through
        chat")."""
        if not self.config.memory_layers:
            return {}
        above = max(self.config.memory_layers)
        masks: dict[str, torch.Tensor | None] = {"final_norm.weight": None}
        for name, _ in self.named_parameters():
            parts = name.split(".")
            if parts[0] == "layers" and int(parts[1]) > above and parts[2].endswith("_norm") and parts[3] == "weight":
                masks[name] = None
        return masks

    def add_adapters(self, rank: int) -> list[str]:
        """Fresh low-rank adapters (models.adapters) on every projection of the layers above the last memory
        layer, in place; returns their parameters' names. Where no layer is above it (Gemma 3), on that layer's
        query, output and MLP: none computes a stored key or value either."""
        if not self.config.memory_layers:
            return []
        last = max(self.config.memory_layers)
        projections = [f"layers.{layer}.{path}" for layer in range(last + 1, self.config.num_layers)
                       for path in PROJECTIONS]
        if not projections:  # its keys and values are what it stores
            projections = [f"layers.{last}.{path}" for path in PROJECTIONS if path.split(".")[1] not in ("k", "v")]
        return add_adapters(self, projections, rank)

    def recall_scores(self, tokens: torch.Tensor, memory: LayerMemoryReader,
                      state: State | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory ids, scores) of every pair the memory layers weighed while reading `tokens`; a pair's
        score is its largest share of a head's attention."""
        recalled = self.recall(tokens, memory, state)
        return (torch.cat([found.ids.flatten() for found in recalled]),
                torch.cat([found.weights.float().flatten() for found in recalled]))

    @torch.inference_mode()
    def recall(self, tokens: torch.Tensor, memory: LayerMemoryReader,
               state: State | None = None) -> tuple[Recalled, ...]:
        """What each memory layer weighs from `memory` while reading `tokens`: `forward`'s `recalled`,
        without the layers above the last memory layer or the read-out (a sixth of SmolLM2's work)."""
        state = self._checked_state(tokens, state)
        _, outs = self._read(tokens, state, memory, max(self.config.memory_layers, default=-1) + 1)
        return tuple(out.recalled for out in outs if out.recalled is not None)

    def _checked_state(self, tokens: torch.Tensor, state: State | None) -> State:
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise ValueError(f"tokens must be a (batch, time) tensor with time >= 1, got shape {tuple(tokens.shape)}")
        if state is None:
            state = self.init_state(tokens.shape[0])
        self._check_state(state, tokens)
        return state

    def _read(self, tokens: torch.Tensor, state: State, memory: LayerMemoryReader | None,
              layers: int) -> tuple[torch.Tensor, list[LayerOutput]]:
        """The residual stream after the first `layers` layers, and each layer's output."""
        if memory is not None and not isinstance(memory, LayerMemoryReader):
            memory = None  # a retrieval block's memory (models.memory.MemoryReader): not for this model
        x = F.embedding(tokens, self.embedding)
        if self.config.scale_embeddings:
            x = x * torch.tensor(math.sqrt(self.config.width), dtype=x.dtype)
        outs = []
        for layer, layer_state in zip(self.layers[:layers], state.layers):
            out = layer(x, layer_state, state.position, memory)
            x = out.x
            outs.append(out)
        return x, outs

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_norm(x)
        logits = (x @ self.embedding.T if self.unembedding is None else self.unembedding(x)).float()
        return soft_cap(logits, self.config.final_soft_cap)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return next_token_loss(logits, targets)

    def _check_state(self, state: State, tokens: torch.Tensor) -> None:
        state.check_tokenizer(self.tokenizer.name)
        kinds = {layer_kind(s) for s in state.layers}
        if len(state.layers) != self.config.num_layers or kinds != {"kv"}:
            raise ValueError(f"state has {len(state.layers)} layers of kinds {sorted(kinds)}, but this model has "
                             f"{self.config.num_layers} attention layers: it belongs to another model")
        if state.batch_size != tokens.shape[0]:
            raise ValueError(f"state batch size {state.batch_size} != tokens batch size {tokens.shape[0]}")
