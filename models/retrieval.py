"""The retrieval block: local attention whose softmax also takes in the top-k transitions of an
external memory, and whose recalls follow the stored text.

Memorizing Transformers' retrieval with three changes that make it usable by a small model:
(1) the memory is searched with the current token's own unit key, against the keys of the tokens
*before* stored values (`MemoryKV`), so a context seen before retrieves the token that followed
it, by construction, with no induction circuit to learn; (2) memory and local scores share one
softmax, and the memory's share of it is the weight with which the retrieved tokens join the
model's output distribution (`MemoryPointer`, `mix_pointer`): a pointer-sentinel mixture. The
residual stream sees only the window, so a false recall costs at most log(1 / (1 - share)) bits
and never corrupts what the layers above compute. The learned per-head gate is a cosine threshold
under which memory scores fall away. (3) Recall follows the stored text, as RetoMaton does: a pair
that named the token that then came is followed to the pair stored after it
(`MemoryReader.follow`, no search needed), for as many as `memory_follow_hops` steps in a row
where the search misses it (an approximate index misses loose matches most). A pair continuing a
run matches by the run's mean cosine (the cosine of its keys concatenated) when that beats its
own: a key reflects a few hundred bytes of context, so a passkey asked after other kinds of text
can match its statement less and less closely digit by digit while the run as a whole still
matches.

Each step weighs R = K x (1 + hops) slots: level 0 holds the K pairs its search found, level n
the pairs followed n hops from a search (a run keeps its slot as it is followed).

Letters: B batch, T time, C cached tokens, H heads, D head dim, K searched pairs, R recalled
slots, V vocabulary.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.attention import AttentionState, WindowedMultiQuery
from models.blocks import BlockContext, BlockOutput
from models.config import ModelConfig
from models.memory import MemoryKV, MemoryReader, RetrievedMemory
from models.pointer import MemoryPointer
from models.runs import first_match, fp16_fingerprint, run_sums

# Stored values from which `RetrievalAttention.named_tokens` looks tokens up by their bits rather
# than comparing each with every code: the two cost the same at about 100 on a CPU thread (0.2 ms).
LOOKUP_FROM = 128
# Initial sharpness of memory scores; learned per head afterwards.
MEMORY_SCALE = 64.0
# Initial gate, in units of cosine. Measured on a trained small model, a context read before
# matches its stored key at cosine ~0.99 while the best match of new text averages ~0.78: with a
# sharp scale, 0.75 starts the memory off taking over only where a context matches closely, with
# one pair winning.
MEMORY_THRESHOLD = 0.75
# Seed of the fixed token codes stored values carry: part of the weights file, never re-drawn.
TOKEN_CODES_SEED = 0


class RetrievalState(NamedTuple):
    """The retrieval block's window, and the pairs its last token weighed, so that the next token
    can follow the ones that named it."""

    keys: torch.Tensor  # (B, C, D) as AttentionState
    values: torch.Tensor  # (B, C, D)
    recalled_ids: torch.Tensor  # (B, R) int64 pair ids, -1 where none
    recalled_tokens: torch.Tensor  # (B, R) int64, the token each named
    run_sums: torch.Tensor  # (B, R) fp32, the cosines summed along the run each one ends (run_sums)
    run_lengths: torch.Tensor  # (B, R) fp32, and that run's length


class _Pairs(NamedTuple):
    """Pairs the retrieval block weighs at each step, with the tokens they name."""

    ids: torch.Tensor  # (B, T, K) int64, -1 where masked
    similarity: torch.Tensor  # (B, T, K) fp32, the cosine of each pair's key with the step's own key
    tokens: torch.Tensor  # (B, T, K) int64, -1 where masked
    mask: torch.Tensor  # (B, T, K) bool


class _Links(NamedTuple):
    """Of one level, per step: the previous step's pairs and the pair stored after each."""

    before_ids: torch.Tensor  # (B, T, K) the previous step's pairs (the state's, for the first step)
    before_tokens: torch.Tensor  # (B, T, K) the tokens they named
    successors: torch.Tensor  # (B, T, K) the ids of the pairs stored right after them, -1 where none


def _step_before(now: torch.Tensor, carried: torch.Tensor) -> torch.Tensor:
    """(B, T, K) of each step's previous one: the state's for the chunk's first step."""
    return torch.cat([carried[:, None], now[:, :-1]], dim=1)


def _slots(found: RetrievedMemory, first: int, count: int) -> RetrievedMemory:
    """Slots [first, first + count) of each step's pairs in a (B, T, R) `follow` answer."""
    return RetrievedMemory(*(part[:, :, first : first + count] for part in found))


class RetrievalAttention(WindowedMultiQuery):
    """Windowed attention plus memory (see the module docstring). It holds a window and projections
    as LocalAttention does (their parameters named alike), not a LocalAttention: its forward weighs
    memory inside the window's softmax."""

    # States it reads (see readable_state): its own, and an attention state from state format 1.
    reads_states: tuple[type, ...] = (RetrievalState, AttentionState)

    def __init__(self, config: ModelConfig, out_init_scale: float):
        super().__init__(config, out_init_scale)
        self.top_k = config.memory_top_k
        self.follow_hops = config.memory_follow_hops
        # log of the score scale; sqrt(D) makes cosine scores as sharp as dot products at init.
        self.log_scale = nn.Parameter(torch.full((self.heads,), 0.5 * math.log(self.head_dim)))
        # Memory scores are scale * (cosine - threshold): the threshold is the learned per-head
        # gate, in units of cosine, so sharpening or softening the scale does not move the point
        # where memory takes over.
        self.memory_log_scale = nn.Parameter(torch.full((self.heads,), math.log(MEMORY_SCALE)))
        self.memory_threshold = nn.Parameter(torch.full((self.heads,), MEMORY_THRESHOLD))
        # A stored value says which token followed its context: a fixed random unit code per
        # token, decoded back to the token when read. Values in memory get no gradient, so a
        # learned value could never learn to carry the token that a recall needs; a fixed
        # code carries it by construction. Kept in the weights file so stored memories stay
        # readable by every later version.
        codes = torch.randn(config.vocab_size, self.head_dim, generator=torch.Generator().manual_seed(TOKEN_CODES_SEED))
        self.register_buffer("token_codes", F.normalize(codes, dim=-1))

    # -- state --------------------------------------------------------------------------------

    @property
    def recall_slots(self) -> int:
        return self.top_k * (1 + self.follow_hops)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> RetrievalState:
        window = self.sliding.init_state(batch_size, device)
        return RetrievalState(*window, *self._nothing_recalled(batch_size, window.keys.device))

    def readable_state(self, state: AttentionState | RetrievalState) -> RetrievalState:
        """The one place older states are upgraded: a state saved before recalls were carried (state
        format 1, an attention state) or recalled under another top_k reads as one that recalled nothing."""
        if isinstance(state, RetrievalState) and state.recalled_ids.shape[1] == self.recall_slots:
            return state
        return RetrievalState(state.keys, state.values, *self._nothing_recalled(state.keys.shape[0], state.keys.device))

    def _nothing_recalled(self, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        nothing = torch.full((batch, self.recall_slots), -1, dtype=torch.long, device=device)
        zeros = torch.zeros(batch, self.recall_slots, device=device)
        return nothing, nothing.clone(), zeros, zeros.clone()

    # -- the block ----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, state: AttentionState | RetrievalState, context: BlockContext) -> BlockOutput:
        """x: (B, T, width), the normed residual stream of `context.tokens` (B, T)."""
        state = self.readable_state(state)
        q, k, v = self.project(x)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        scale = self.log_scale.exp().type_as(q)[:, None]  # (H, 1)
        local, local_lse = self.sliding.attend_with_lse(q * scale, k, v, state)  # (B, T, H, D), (B, T, H)
        window = self.sliding.advance(state, k, v)
        if context.memory is None:  # what the last token recalled can no longer be followed
            pointer, recalled = None, self._nothing_recalled(k.shape[0], k.device)
        else:
            pointer, recalled = self._point(k, context.memory, local_lse, state, context.tokens)
        return BlockOutput(self.out(local.flatten(-2)), RetrievalState(*window, *recalled),
                           self.transitions(state, k, context.tokens), pointer)

    def transitions(self, state: RetrievalState, k: torch.Tensor, tokens: torch.Tensor) -> MemoryKV:
        """This chunk's pairs: (unit key of the token before t, code of token t)."""
        before = state.keys[:, -1:].type_as(k) if state.keys.shape[1] else torch.zeros_like(k[:, :1])
        return MemoryKV(torch.cat([before, k[:, :-1]], dim=1).detach(), self.token_codes[tokens].type_as(k))

    # -- what stored values name ----------------------------------------------------------------

    def named_tokens(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
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
        (key, checksum), (code_key, code_checksum) = fp16_fingerprint(stored), fp16_fingerprint(codes)
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

    # -- recall: search, then follow ------------------------------------------------------------

    def _weighed(self, query: torch.Tensor, found: RetrievedMemory, mask: torch.Tensor) -> _Pairs:
        """Found pairs as weighed: masked ids, cosines with each step's own key (query: (B, T, D)),
        the tokens they name."""
        similarity = torch.einsum("btd,btkd->btk", query, found.keys.float())
        return _Pairs(found.ids.masked_fill(~mask, -1), similarity, self.named_tokens(found.values, mask), mask)

    def _search_step(self, k: torch.Tensor, memory: MemoryReader) -> _Pairs:
        """Level 0: the top-k pairs of one search per token, shared by the heads."""
        found = memory.search(k.detach()[:, :, None], self.top_k)
        found = RetrievedMemory(*(part[:, :, 0] for part in found))  # (B, T, K, ...): drop the head axis
        return self._weighed(k.float(), found, found.mask)

    def _follow_step(self, k: torch.Tensor, links: _Links, after: RetrievedMemory, tokens: torch.Tensor,
                     weighed: list[_Pairs]) -> _Pairs:
        """The next level: where each previous pair leads, if that pair named the token that came and
        the pair it leads to is not weighed already."""
        duplicate = first_match(after.ids, torch.cat([pairs.ids for pairs in weighed], dim=2)) >= 0
        mask = after.mask & (links.before_tokens == tokens[:, :, None]) & ~duplicate
        return self._weighed(k.float(), after, mask)

    def _candidates(
        self, k: torch.Tensor, memory: MemoryReader, state: RetrievalState, tokens: torch.Tensor
    ) -> tuple[_Pairs, torch.Tensor]:
        """Each step's pairs, (B, T, R): the searched ones, then those followed 1, 2, ... hops; and the
        slot each continues among the previous step's pairs (-1: it starts a run)."""
        top_k, batch, levels_total = self.top_k, k.shape[0], 1 + self.follow_hops
        carried_ids = state.recalled_ids.view(batch, levels_total, top_k)
        carried_tokens = state.recalled_tokens.view(batch, levels_total, top_k)
        # A decoding step follows only the previous step's pairs, every level of them carried in the
        # state: one lookup for all levels instead of one per level.
        ahead = memory.follow(state.recalled_ids[:, None]) if k.shape[1] == 1 else None  # (B, 1, R)
        levels, links = [self._search_step(k, memory)], []
        for level in range(levels_total):
            before_ids = _step_before(levels[level].ids, carried_ids[:, level])
            before_tokens = _step_before(levels[level].tokens, carried_tokens[:, level])
            if not (before_ids >= 0).any() and not (carried_ids[:, level + 1 :] >= 0).any():
                # Nothing to follow at this level or above (a level is fed by the one below): spare the lookups.
                links.append(_Links(before_ids, before_tokens, torch.full_like(before_ids, -1)))
                break
            after = memory.follow(before_ids) if ahead is None else _slots(ahead, level * top_k, top_k)
            links.append(_Links(before_ids, before_tokens, after.ids))
            if level + 1 < levels_total:
                levels.append(self._follow_step(k, links[-1], after, tokens, levels))
        pairs, links = self._padded(levels, links)
        return pairs, self._parents(pairs, links, tokens)

    def _padded(self, levels: list[_Pairs], links: list[_Links]) -> tuple[_Pairs, _Links]:
        """Every level side by side, (B, T, R); levels the loop did not reach weigh nothing and lead nowhere."""
        levels_total = 1 + self.follow_hops
        nothing = torch.full_like(levels[0].ids, -1)
        levels = levels + [_Pairs(nothing, torch.zeros_like(levels[0].similarity), nothing, nothing >= 0)] * (
            levels_total - len(levels))
        links = links + [_Links(nothing, nothing, nothing)] * (levels_total - len(links))
        return (_Pairs(*(torch.cat(parts, dim=2) for parts in zip(*levels))),
                _Links(*(torch.cat(parts, dim=2) for parts in zip(*links))))

    @staticmethod
    def _parents(pairs: _Pairs, links: _Links, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, R) the slot among the previous step's pairs each pair continues: the one it succeeds,
        if that one named the token that came; -1 where none (one parent at most)."""
        continued = (links.before_ids >= 0) & (links.successors >= 0) & (links.before_tokens == tokens[:, :, None])
        parent = first_match(pairs.ids, links.successors.masked_fill(~continued, -2))  # ids >= -1: -2 matches nothing
        return parent.masked_fill(~pairs.mask, -1)

    def _point(
        self,
        k: torch.Tensor,
        memory: MemoryReader,
        local_lse: torch.Tensor,
        state: RetrievalState,
        tokens: torch.Tensor,
    ) -> tuple[MemoryPointer, tuple[torch.Tensor, ...]]:
        """Weigh each step's recalled pairs and what they name; returns the pointer and what the last step recalled."""
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
        share_logit = (memory_lse - local_lse.float()).masked_fill(~torch.isfinite(memory_lse), float("-inf"))
        pointer = MemoryPointer(share_logit, weights, pairs.tokens.clamp(min=0), pairs.ids, match.detach())
        return pointer, (pairs.ids[:, -1], pairs.tokens[:, -1], sums[:, -1].detach(), lengths[:, -1].detach())
