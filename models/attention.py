"""Local (sliding-window) multi-query attention and the retrieval attention block.

Both keep the last W keys/values of the stream *without* rotary embedding and
rotate at use time, relative to the oldest cached token. Attention scores only
depend on position differences, so this equals absolute RoPE while keeping
angles small forever: an infinite session never loses precision to huge
positions.

Letters: B batch, T new tokens, C cached tokens (<= W), S keys, H query heads,
D head dim, K retrieved pairs, N query blocks.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.layers import Dense
from models.memory import MemoryReader, RetrievedMemory

try:  # Optional CUDA kernel; the PyTorch path below gives the same numbers.
    from flash_attn import flash_attn_func as _flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    _flash_attn_func = None


def flash_attn_available() -> bool:
    return _flash_attn_func is not None and torch.cuda.is_available()


class AttentionState(NamedTuple):
    keys: torch.Tensor  # (B, C, D) un-rotated keys of the last C <= W tokens, oldest first
    values: torch.Tensor  # (B, C, D)


class RetrievalState(NamedTuple):
    """The retrieval block's window, and the pairs its last token weighed (R = K x (1 + hops): the
    searched ones, then those followed 1, 2, ... hops), so that the next token can follow the ones
    that named it (see RetrievalAttention)."""

    keys: torch.Tensor  # (B, C, D) as AttentionState
    values: torch.Tensor  # (B, C, D)
    recalled_ids: torch.Tensor  # (B, R) int64 pair ids, -1 where none
    recalled_tokens: torch.Tensor  # (B, R) int64, the token each named
    run_sums: torch.Tensor  # (B, R) fp32, the cosines summed along the run each one ends (run_sums)
    run_lengths: torch.Tensor  # (B, R) fp32, and that run's length


@functools.lru_cache(maxsize=32)
def _rope_table(length: int, rope_dim: int, max_wavelength: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos of every (position, frequency) for positions 0..length-1: (length, rope_dim / 2) each.

    Built outside inference mode, so a table first made while serving can still be used in training.
    """
    with torch.inference_mode(False), torch.no_grad():
        return _build_rope_table(length, rope_dim, max_wavelength, device)


def _build_rope_table(length: int, rope_dim: int, max_wavelength: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    freq_exponents = 2 * torch.arange(rope_dim // 2, device=device, dtype=torch.float32) / rope_dim
    inv_freq = 1.0 / (max_wavelength**freq_exponents)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq
    return torch.sin(angles), torch.cos(angles)


def apply_rope(x: torch.Tensor, start: int, max_wavelength: int) -> torch.Tensor:
    """Rotate the first half of the last dim (Griffin's convention) for positions start, start+1, ...

    x: (B, S, ..., D). Tables are built for a power-of-two length, so a stream reuses a few of them.
    """
    steps, rope_dim = x.shape[1], x.shape[-1] // 2
    length = 1 << (start + steps - 1).bit_length()
    sin, cos = _rope_table(length, rope_dim, max_wavelength, x.device)
    shape = (1, steps, *([1] * (x.dim() - 3)), rope_dim // 2)
    sin, cos = sin[start : start + steps].reshape(shape).type_as(x), cos[start : start + steps].reshape(shape).type_as(x)
    rope_part, passthrough = x.split([rope_dim, x.shape[-1] - rope_dim], dim=-1)
    first, second = rope_part.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin, passthrough], dim=-1)


def _window_mask(
    *, steps: int, cached: int, window: int, block: int, span: int, offset: int, pad: int, heads: int, device
) -> torch.Tensor:
    """Which keys each query of each block may see: itself and the `window` keys before it.

    Query i (of the new tokens) sits at key index i + cached; block n holds queries
    [n*block, (n+1)*block) and keys [n*block + offset - pad, ... + span) of the unpadded keys.
    Returns an additive (1, N, block * heads, span) mask, 0 or -inf: a 4-D float mask keeps
    PyTorch on its fused CPU attention kernel. Padded query rows see everything (they are dropped).
    """
    num_blocks = -(-steps // block)
    q = torch.arange(num_blocks * block, device=device).view(num_blocks, block, 1)
    start = torch.arange(num_blocks, device=device).view(num_blocks, 1, 1) * block + offset - pad
    k = start + torch.arange(span, device=device).view(1, 1, span)
    q_pos = q + cached
    mask = (k >= 0) & (k <= q_pos) & (k >= q_pos - window)
    mask |= q >= steps
    additive = torch.zeros(mask.shape, device=device).masked_fill_(~mask, float("-inf"))
    return additive.repeat_interleave(heads, dim=1)[None]


class _WindowBlocks(NamedTuple):
    q: torch.Tensor  # (B, N, block * H, D)
    k: torch.Tensor  # (B, N, span, D)
    v: torch.Tensor  # (B, N, span, D)
    mask: torch.Tensor  # (1, N, block * H, span) additive, 0 or -inf


def _window_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cached: int, window: int) -> _WindowBlocks:
    """Cut T queries into blocks, each with the slice of span block + window keys it can see.

    The cost of attending block by block is O(T * W), not O(T * (C + T)).
    """
    batch, steps, heads, dim = q.shape
    block = min(steps, window)  # queries per block
    # No query looks back further than the keys it has, so clamp the window to that.
    window = min(window, cached + steps - 1)
    num_blocks = -(-steps // block)
    span = block + window
    pad = max(0, window - cached)  # zeros on the left so every block's slice exists
    offset = cached - window + pad  # first key of block 0, in padded coordinates
    tail = max(0, offset + (num_blocks - 1) * block + span - (pad + cached + steps))
    k_padded = F.pad(k, (0, 0, pad, tail))  # (B, pad + C + T + tail, D)
    v_padded = F.pad(v, (0, 0, pad, tail))
    k_blocks = k_padded[:, offset:].unfold(1, span, block)[:, :num_blocks].transpose(-1, -2)  # (B, N, span, D)
    v_blocks = v_padded[:, offset:].unfold(1, span, block)[:, :num_blocks].transpose(-1, -2)
    q_blocks = F.pad(q, (0, 0, 0, 0, 0, num_blocks * block - steps))
    # Multi-query: every head shares the one key/value head, so heads become extra query rows.
    q_blocks = q_blocks.reshape(batch, num_blocks, block * heads, dim)  # (B, N, block*H, D)
    mask = _window_mask(
        steps=steps, cached=cached, window=window, block=block, span=span,
        offset=offset, pad=pad, heads=heads, device=q.device,
    )
    return _WindowBlocks(q_blocks, k_blocks, v_blocks, mask.type_as(q))


def sliding_window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cached: int, window: int, scale: float
) -> torch.Tensor:
    """Causal multi-query attention of T new queries over [C cached + T new] keys.

    q: (B, T, H, D); k, v: (B, C + T, D). Query i sees keys i + C - window .. i + C.
    """
    batch, steps, heads, dim = q.shape
    if _flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return _flash_attn_func(
            q, k[:, :, None], v[:, :, None], softmax_scale=scale, causal=True, window_size=(window, 0)
        )
    if steps == 1 and cached <= window:
        # Decoding: every cached key is inside the window, so no mask is needed.
        return F.scaled_dot_product_attention(q.transpose(1, 2), k[:, None], v[:, None], scale=scale).transpose(1, 2)
    blocks = _window_blocks(q, k, v, cached=cached, window=window)
    out = F.scaled_dot_product_attention(blocks.q, blocks.k, blocks.v, attn_mask=blocks.mask, scale=scale)
    return out.reshape(batch, -1, heads, dim)[:, :steps]


def sliding_window_attention_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cached: int, window: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sliding_window_attention` that also returns each query's log-sum-exp of scores: (B, T, H, D), (B, T, H).

    The log-sum-exp lets another set of scores join the same softmax afterwards.
    """
    batch, steps, heads, dim = q.shape
    if steps == 1 and cached <= window:
        # Decoding: every cached key is inside the window, so the one block needs no mask.
        blocks = _WindowBlocks(q, k[:, None], v[:, None], mask=q.new_zeros(()))
    else:
        blocks = _window_blocks(q, k, v, cached=cached, window=window)
    scores = (blocks.q @ blocks.k.transpose(-1, -2)).float() * scale + blocks.mask.float()  # (B, N, block*H, span)
    lse = scores.logsumexp(dim=-1, keepdim=True)
    out = torch.exp(scores - lse).type_as(q) @ blocks.v
    return out.reshape(batch, -1, heads, dim)[:, :steps], lse.reshape(batch, -1, heads)[:, :steps]


def _append_window(cache: torch.Tensor, new: torch.Tensor, window: int) -> torch.Tensor:
    joined = torch.cat([cache, new.detach().float()], dim=1)
    return joined[:, -window:]


class LocalAttention(nn.Module):
    """Griffin's local attention block: MQA, RoPE on half the features, window W."""

    def __init__(self, config: ModelConfig, out_init_scale: float):
        super().__init__()
        width, self.heads, self.head_dim = config.width, config.num_heads, config.head_dim
        self.window = config.attention_window
        self.rope_max_wavelength = config.rope_max_wavelength
        self.qkv = Dense(width, width + 2 * self.head_dim, bias=False)  # [q | k | v]
        self.out = Dense(width, width, init_scale=out_init_scale)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> AttentionState:
        empty = torch.zeros(batch_size, 0, self.head_dim, device=device)
        return AttentionState(keys=empty, values=empty.clone())

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, steps, _ = x.shape
        q, k, v = self.qkv(x).split([self.heads * self.head_dim, self.head_dim, self.head_dim], dim=-1)
        return q.view(batch, steps, self.heads, self.head_dim), k, v  # (B,T,H,D), (B,T,D), (B,T,D)

    def window_inputs(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: AttentionState
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries and [cached + new] keys rotated relative to the oldest cached token, and the values."""
        cached = state.keys.shape[1]
        keys = apply_rope(torch.cat([state.keys.type_as(k), k], dim=1), 0, self.rope_max_wavelength)
        values = torch.cat([state.values.type_as(v), v], dim=1)
        return apply_rope(q, cached, self.rope_max_wavelength), keys, values

    def local_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: AttentionState, scale: float
    ) -> torch.Tensor:
        q, keys, values = self.window_inputs(q, k, v, state)
        return sliding_window_attention(q, keys, values, cached=state.keys.shape[1], window=self.window, scale=scale)

    def next_state(self, state: AttentionState, k: torch.Tensor, v: torch.Tensor) -> AttentionState:
        return AttentionState(
            keys=_append_window(state.keys, k, self.window), values=_append_window(state.values, v, self.window)
        )

    def forward(self, x: torch.Tensor, state: AttentionState) -> tuple[torch.Tensor, AttentionState]:
        q, k, v = self.project(x)
        out = self.local_attention(q, k, v, state, scale=self.head_dim**-0.5)  # (B, T, H, D)
        return self.out(out.flatten(-2)), self.next_state(state, k, v)


class MemoryKV(NamedTuple):
    """The (key, value) pairs a chunk contributes to the retrieval memory, one per token.

    Pair t is a transition: the key describes the context *before* token t (the
    unit key of token t - 1; zero for a stream's first token) and the value names
    token t. A later query that finds its own context there reads what came next.
    """

    keys: torch.Tensor  # (B, T, D) L2-normalised (or zero), no position information
    values: torch.Tensor  # (B, T, D) the fixed unit code of token t (RetrievalAttention.token_codes)


class MemoryPointer(NamedTuple):
    """What the memory says about each position's next token, for the model's output mixture.

    Per head, the memory's share of the joint softmax over [window, retrieved pairs] is the
    weight of a pointer distribution over the tokens the retrieved pairs name: the
    pointer-sentinel mixture, with the window playing the sentinel.
    """

    # (B, T, H) fp32: log-odds of memory against the window in each head's joint softmax, so the
    # memory's share is its sigmoid; -inf where nothing was found.
    share_logit: torch.Tensor
    weights: torch.Tensor  # (B, T, H, K) fp32, each head's softmax over the retrieved pairs
    tokens: torch.Tensor  # (B, T, K) int64, the token each retrieved pair says followed its context
    # Provenance, for whoever asks which memories were used (admin recall), found or followed:
    ids: torch.Tensor  # (B, T, K) int64, the retrieved pairs' ids; -1 where a slot holds none
    match: torch.Tensor  # (B, T, K) fp32, each pair's cosine match (a run's mean where that is higher)

    def pair_shares(self) -> torch.Tensor:
        """(B, T, K) each retrieved pair's weight in the output distribution: its copy weight, averaged
        over heads. At a position they sum to the memory's share of the prediction."""
        heads = self.share_logit.shape[-1]
        return (torch.sigmoid(self.share_logit)[..., None] * self.weights).sum(2) / heads


def mix_pointer(logits: torch.Tensor, pointer: MemoryPointer) -> torch.Tensor:
    """Log-probabilities of p = (1 - g) softmax(logits) + mean over heads of share_h x pointer_h.

    logits: (B, T, V); g is the mean share. log(1 - g) comes from the log-odds, so a share
    that rounds to 1 in fp32 cannot zero the model's own distribution (a wrong recall would
    then cost infinite bits).
    """
    heads = pointer.share_logit.shape[-1]
    log_keep = F.logsigmoid(-pointer.share_logit).logsumexp(-1, keepdim=True) - math.log(heads)  # (B, T, 1)
    copy = torch.zeros_like(logits).scatter_add_(-1, pointer.tokens, pointer.pair_shares())  # (B, T, V)
    # log(copy) with -inf (and no NaN gradient) for the tokens no retrieved pair names.
    log_copy = torch.where(copy > 0, copy, torch.ones_like(copy)).log().masked_fill(copy <= 0, float("-inf"))
    return torch.logaddexp(log_keep + logits.log_softmax(-1), log_copy)


def run_sums(values: torch.Tensor, carried: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """Each pair's `values` summed along the run of pairs it ends.

    values: (B, T, R) of each step's pairs; carried: (B, R) the sums of the runs the pairs of the
    step before the first end; parent: (B, T, R) the slot among the previous step's pairs that a
    pair continues, -1 where it starts a run. A pair has at most one parent, so runs are paths and
    their sums come from pointer jumping: log2(T) rounds instead of a loop over T.
    """
    batch, steps, slots = values.shape
    zero = values.new_zeros(batch, 1)  # node 0: where every run starts, adding nothing
    sums = torch.cat([zero, carried.type_as(values), values.flatten(1)], dim=1)  # (B, 1 + (T+1)*R)
    first_of_step = 1 + torch.arange(steps, device=values.device).view(1, steps, 1) * slots  # the step before's
    up = torch.where(parent >= 0, first_of_step + parent, 0)  # (B, T, R) node each continues
    up = torch.cat([torch.zeros(batch, 1 + slots, dtype=torch.long, device=up.device), up.flatten(1)], dim=1)
    for _ in range(max(1, math.ceil(math.log2(steps + 1)))):
        sums = sums + sums.gather(1, up)
        up = up.gather(1, up)
    return sums[:, 1 + slots :].view(batch, steps, slots)


# Up to how many (query, table entry) comparisons `first_match` makes them all.
COMPARE_ALL_UP_TO = 1 << 16


def first_match(queries: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """For each of `queries` (..., Q), the first position in `table` (..., S) that holds the same
    value, -1 where none does. A chunk's steps (512 x 160 candidates) are matched by a stable sort
    and a binary search, O(S log S) per row where comparing every pair would cost Q x S; a
    decoding step's few are compared directly, which takes fewer operations."""
    if queries.numel() * table.shape[-1] <= COMPARE_ALL_UP_TO:
        equal = queries[..., :, None] == table[..., None, :]
        return torch.where(equal.any(-1), equal.to(torch.uint8).argmax(-1), -1)
    order = table.argsort(dim=-1, stable=True)  # equal values keep their order: the first comes first
    ordered = table.gather(-1, order)
    at = torch.searchsorted(ordered, queries.contiguous()).clamp(max=table.shape[-1] - 1)
    return torch.where(ordered.gather(-1, at) == queries, order.gather(-1, at), -1)


def _fp16_fingerprint(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) fp16 -> (N,) int64 and int32: the bits of the first two components side by side, and
    the sum of all components' bits (equal vectors, equal sums; exact: D x 2^15 fits in int32)."""
    bits = vectors.contiguous().view(torch.int16)
    first_two = bits[:, :2].long() & 0xFFFF
    return first_two[:, 0] << 16 | first_two[:, 1], bits.sum(-1, dtype=torch.int32)


class _Pairs(NamedTuple):
    """Pairs the retrieval block weighs at each step, with the tokens they name."""

    ids: torch.Tensor  # (B, T, K) int64, -1 where masked
    similarity: torch.Tensor  # (B, T, K) fp32, the cosine of each pair's key with the step's own key
    tokens: torch.Tensor  # (B, T, K) int64, -1 where masked
    mask: torch.Tensor  # (B, T, K) bool


def _slots(found: RetrievedMemory, first: int, count: int) -> RetrievedMemory:
    """Slots [first, first + count) of each step's pairs in a (B, T, R) `follow` answer."""
    return RetrievedMemory(*(part[:, :, first : first + count] for part in found))


# Stored values from which `RetrievalAttention._named` looks tokens up by their bits rather than
# comparing each with every code: the two cost the same at about 100 on a CPU thread (0.2 ms).
LOOKUP_FROM = 128
MEMORY_SCALE = 64.0  # initial sharpness of memory scores; learned per head afterwards


class RetrievalAttention(LocalAttention):
    """Local attention whose softmax also takes in the top-k transitions of an external memory.

    Memorizing Transformers' retrieval with three changes that make it usable by a small
    model: (1) the memory is searched with the current token's own unit key, against the
    keys of the tokens *before* stored values (`MemoryKV`), so a context seen before
    retrieves the token that followed it, by construction, with no induction circuit to
    learn; (2) memory and local scores share one softmax, and the memory's share of it
    is the weight with which the retrieved tokens join the model's output distribution
    (`MemoryPointer`, `mix_pointer`): a pointer-sentinel mixture. The residual stream sees
    only the window, so a false recall costs at most log(1 / (1 - share)) bits and never
    corrupts what the layers above compute. The learned per-head gate is a cosine
    threshold under which memory scores fall away. (3) Recall follows the stored text, as
    RetoMaton does: a pair that named the token that then came is followed to the pair
    stored after it (`MemoryReader.follow`, no search needed), for as many as
    `memory_follow_hops` steps in a row where the search misses it (an approximate index
    misses loose matches most). A pair continuing a run matches by the run's mean cosine
    (the cosine of its keys concatenated) when that beats its own: a key reflects a few
    hundred bytes of context, so a passkey asked after other kinds of text can match its
    statement less and less closely digit by digit while the run as a whole still matches.
    """

    def __init__(self, config: ModelConfig, out_init_scale: float):
        super().__init__(config, out_init_scale)
        self.top_k = config.memory_top_k
        self.follow_hops = config.memory_follow_hops
        # log of the score scale; sqrt(D) makes cosine scores as sharp as dot products at init.
        self.log_scale = nn.Parameter(torch.full((self.heads,), 0.5 * math.log(self.head_dim)))
        # Memory scores are scale * (cosine - threshold): the threshold is the learned per-head
        # gate, in units of cosine, so sharpening or softening the scale does not move the point
        # where memory takes over. Measured on a trained small model, a context read before
        # matches its stored key at cosine ~0.99 while the best match of new text averages
        # ~0.78: a sharp scale and a threshold of 0.75 start the memory off taking over only
        # where a context matches closely, with one pair winning.
        self.memory_log_scale = nn.Parameter(torch.full((self.heads,), math.log(MEMORY_SCALE)))
        self.memory_threshold = nn.Parameter(torch.full((self.heads,), 0.75))
        # A stored value says which token followed its context: a fixed random unit code per
        # token, decoded back to the token when read. Values in memory get no gradient, so a
        # learned value could never learn to carry the token that a recall needs; a fixed
        # code carries it by construction. Kept in the weights file so stored memories stay
        # readable by every later version.
        codes = torch.randn(config.vocab_size, self.head_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("token_codes", F.normalize(codes, dim=-1))
        # Tests and ablations force the memory's share of the softmax (e.g. 1.0) without touching weights.
        self.forced_gate: float | None = None

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> RetrievalState:
        window = super().init_state(batch_size, device)
        return RetrievalState(*window, *self._nothing_recalled(batch_size, window.keys.device))

    def upgrade_state(self, state: AttentionState | RetrievalState) -> RetrievalState:
        """A state saved before recalls were carried (state format 1) reads as one that recalled nothing."""
        if isinstance(state, RetrievalState):
            return state
        return RetrievalState(*state, *self._nothing_recalled(state.keys.shape[0], state.keys.device))

    @property
    def recall_slots(self) -> int:
        return self.top_k * (1 + self.follow_hops)

    def _nothing_recalled(self, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        nothing = torch.full((batch, self.recall_slots), -1, dtype=torch.long, device=device)
        zeros = torch.zeros(batch, self.recall_slots, device=device)
        return nothing, nothing.clone(), zeros, zeros.clone()

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, state: RetrievalState, memory: MemoryReader | None, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, RetrievalState, MemoryKV, MemoryPointer | None]:
        """x: (B, T, width), the normed residual stream of `tokens` (B, T)."""
        q, k, v = self.project(x)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        scale = self.log_scale.exp().type_as(q)[:, None]  # (H, 1)
        q, keys, values = self.window_inputs(q * scale, k, v, state)
        local, local_lse = sliding_window_attention_lse(
            q, keys, values, cached=state.keys.shape[1], window=self.window, scale=1.0
        )  # (B, T, H, D), (B, T, H)
        window = self.next_state(state, k, v)
        if memory is None:  # what the last token recalled can no longer be followed
            pointer, recalled = None, self._nothing_recalled(k.shape[0], k.device)
        else:
            pointer, recalled = self._point(k, memory, local_lse, state, tokens)
        return self.out(local.flatten(-2)), RetrievalState(*window, *recalled), self.transitions(state, k, tokens), pointer

    def transitions(self, state: RetrievalState, k: torch.Tensor, tokens: torch.Tensor) -> MemoryKV:
        """This chunk's pairs: (unit key of the token before t, code of token t)."""
        before = state.keys[:, -1:].type_as(k) if state.keys.shape[1] else torch.zeros_like(k[:, :1])
        return MemoryKV(torch.cat([before, k[:, :-1]], dim=1).detach(), self.token_codes[tokens].type_as(k))

    def _named(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The tokens stored values name (the nearest code is the token); -1 where masked.

        A few values (a decoding step's 32) are compared with every code. Many (a chunk's: 16K
        per level) are looked up by their bits instead, ten times faster: a stored value is a
        code rounded to fp16, as SQL keeps it, so its first two components find the code and a
        checksum of all of them confirms it. Values that are not such a code (kept in bf16, say)
        are still compared with every code.
        """
        if mask.numel() < LOOKUP_FROM:  # empty slots name some token too, overwritten by -1
            return self._nearest_code(values.flatten(0, -2)).view(mask.shape).masked_fill(~mask, -1)
        stored = values.half().flatten(0, -2)  # (N, D)
        codes = self.token_codes.half()  # (V, D)
        (key, checksum), (code_key, code_checksum) = _fp16_fingerprint(stored), _fp16_fingerprint(codes)
        found = first_match(key[None], code_key[None])[0]
        exact = (found >= 0) & (code_checksum[found.clamp(min=0)] == checksum)
        found, exact = found.view(mask.shape), exact.view(mask.shape)
        guess = mask & ~exact
        if guess.any():
            found[guess] = self._nearest_code(values[guess])
        return found.masked_fill(~mask, -1)

    def _nearest_code(self, values: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N,) the token whose code has the largest product with each value."""
        return (values.float() @ self.token_codes.float().T).argmax(-1)

    def _candidates(
        self, k: torch.Tensor, memory: MemoryReader, state: RetrievalState, tokens: torch.Tensor
    ) -> tuple[_Pairs, torch.Tensor]:
        """Each step's pairs, R = K x (1 + hops) slots: the searched ones, then those followed 1, 2, ...
        hops from a search (a run keeps its slot as it is followed); and the slot each continues among
        the previous step's pairs (-1: it starts a run)."""
        top_k, batch = self.top_k, k.shape[0]

        def step_before(now: torch.Tensor, carried: torch.Tensor) -> torch.Tensor:
            """(B, T, K) of each step's previous one: the state's for the chunk's first step."""
            return torch.cat([carried[:, None], now[:, :-1]], dim=1)

        query = k.float()

        def cosine(keys: torch.Tensor) -> torch.Tensor:
            """(B, T, K, D) pairs' keys -> (B, T, K) their cosines with each step's own key."""
            return torch.einsum("btd,btkd->btk", query, keys.float())

        found = memory.search(k.detach()[:, :, None], top_k)  # one search per token, shared by the heads
        mask = found.mask[:, :, 0]
        levels = [_Pairs(found.ids[:, :, 0].masked_fill(~mask, -1), cosine(found.keys[:, :, 0]),
                         self._named(found.values[:, :, 0], mask), mask)]
        carried_ids = state.recalled_ids.view(batch, 1 + self.follow_hops, top_k)
        carried_tokens = state.recalled_tokens.view(batch, 1 + self.follow_hops, top_k)
        # A decoding step follows only the previous step's pairs, every level of them carried in the
        # state: one lookup for all levels instead of one per level.
        ahead = memory.follow(state.recalled_ids[:, None]) if k.shape[1] == 1 else None  # (B, 1, R)
        before_ids, before_tokens, successors = [], [], []  # per level: the previous step's pairs, where each leads
        for level in range(1 + self.follow_hops):
            before_ids.append(step_before(levels[level].ids, carried_ids[:, level]))
            before_tokens.append(step_before(levels[level].tokens, carried_tokens[:, level]))
            if not (before_ids[level] >= 0).any() and not (carried_ids[:, level + 1 :] >= 0).any():
                break  # nothing to follow at this level or above (a level is fed by the one below): spare the lookups
            after = memory.follow(before_ids[level]) if ahead is None else _slots(ahead, level * top_k, top_k)
            successors.append(after.ids)
            if level == self.follow_hops:
                break
            # Follow a pair that named the token that came, unless the pair it leads to is already weighed.
            duplicate = first_match(after.ids, torch.cat([pairs.ids for pairs in levels], dim=2)) >= 0
            mask = after.mask & (before_tokens[level] == tokens[:, :, None]) & ~duplicate
            levels.append(_Pairs(after.ids.masked_fill(~mask, -1), cosine(after.keys), self._named(after.values, mask), mask))
        # Levels the loop did not reach weigh nothing and lead nowhere.
        nothing = torch.full_like(levels[0].ids, -1)
        levels += [_Pairs(nothing, torch.zeros_like(levels[0].similarity), nothing, nothing >= 0)] * (1 + self.follow_hops - len(levels))
        for parts in (before_ids, before_tokens, successors):
            parts += [nothing] * (1 + self.follow_hops - len(parts))
        pairs = _Pairs(*(torch.cat(parts, dim=2) for parts in zip(*levels)))  # (B, T, R)
        before_ids, before_tokens, successors = (torch.cat(parts, dim=2) for parts in (before_ids, before_tokens, successors))

        # A pair continues the previous pair it succeeds, if that one named the token that came.
        continued = (before_ids >= 0) & (successors >= 0) & (before_tokens == tokens[:, :, None])  # (B, T, R)
        parent = first_match(pairs.ids, successors.masked_fill(~continued, -2))  # ids are >= -1: -2 matches nothing
        return pairs, parent.masked_fill(~pairs.mask, -1)  # (B, T, R); one parent at most

    def _point(
        self, k: torch.Tensor, memory: MemoryReader, local_lse: torch.Tensor, state: RetrievalState, tokens: torch.Tensor
    ) -> tuple[MemoryPointer, tuple[torch.Tensor, ...]]:
        """Weigh each step's recalled pairs and what they name; returns the pointer and what the last step recalled."""
        if state.recalled_ids.shape[1] != self.recall_slots:  # recalled under another top_k: start afresh
            state = state._replace(**dict(zip(RetrievalState._fields[2:], self._nothing_recalled(k.shape[0], k.device))))
        pairs, parent = self._candidates(k, memory, state, tokens)
        similarity = pairs.similarity  # (B, T, R)
        sums = run_sums(similarity, state.run_sums, parent)
        lengths = run_sums(torch.ones_like(similarity), state.run_lengths, parent)
        # A run matches as a whole: the mean of its unit keys' cosines is the cosine of the keys
        # concatenated along it. A pair never matches worse than by its own key.
        match = torch.maximum(similarity, sums / lengths)
        scale = self.memory_log_scale.exp().float()[:, None]  # (H, 1)
        scores = (match[:, :, None] - self.memory_threshold.float()[:, None]) * scale  # (B, T, H, R)
        scores = scores.masked_fill(~pairs.mask[:, :, None], float("-inf"))
        memory_lse = scores.logsumexp(dim=-1)  # (B, T, H); -inf where nothing was found
        weights = torch.exp(scores - memory_lse[..., None]).nan_to_num(0.0)
        if self.forced_gate is None:
            share_logit = memory_lse - local_lse.float()  # the memory's log-odds in the joint softmax
        else:
            share_logit = torch.full_like(memory_lse, torch.special.logit(torch.tensor(self.forced_gate)).item())
        share_logit = share_logit.masked_fill(~torch.isfinite(memory_lse), float("-inf"))
        pointer = MemoryPointer(share_logit, weights, pairs.tokens.clamp(min=0), pairs.ids, match.detach())
        return pointer, (pairs.ids[:, -1], pairs.tokens[:, -1], sums[:, -1].detach(), lengths[:, -1].detach())
