"""HybridLM: Griffin's recurrent + local-attention residual stack with one retrieval block.

    tokens -> embed (x sqrt(width)) -> [ResidualBlock] * L -> RMSNorm -> tied unembed -> soft cap
           [-> with a memory: mixed with the retrieval block's pointer over recalled tokens]

Each residual block is pre-norm: x + temporal(norm(x)), then x + mlp(norm(x)),
where temporal is a RecurrentBlock, LocalAttention or RetrievalAttention, each called the same
way (models.blocks).
Letters: B batch, T time, V vocabulary, D width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from models.attention import LocalAttention
from models.blocks import BlockContext, BlockOutput
from models.capabilities import Capabilities
from models.config import ModelConfig
from models.heads import next_token_loss, soft_cap
from models.layer_memory import Recalled
from models.layers import GatedMLP, RecurrentBlock, RMSNorm
from models.memory import MemoryKV, MemoryReader
from models.pointer import MemoryPointer, mix_pointer
from models.retrieval import RetrievalAttention
from models.state import LayerState, State, layer_kind
from models.tokenizer import ByteTokenizer, Tokenizer

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ModelOutput:
    # (B, T, V) fp32 log-probabilities of the next token: the model's own distribution, or with a
    # memory its mixture with the memory's pointer. Normalised either way, so softmax, argmax and
    # cross entropy read them as they would read logits.
    log_probs: torch.Tensor
    state: State  # the stream's state after these tokens (detached: callers truncate gradients here)
    # This chunk's (key, value) pairs for the memory: a retrieval block's (B, T, D), or an imported model's memory
    # layers' (B, T, channels, E) (models.layer_memory); None without either.
    memory_kv: MemoryKV | None
    pointer: MemoryPointer | None = None  # what the memory said at each step and which pairs said it; None without one
    # An imported model's memory layers: what each weighed from memory, bottom to top; None without a memory.
    recalled: tuple[Recalled, ...] | None = None


# The temporal block each name in ModelConfig.block_types builds.
TEMPORAL_BLOCKS: dict[str, type[nn.Module]] = {
    "recurrent": RecurrentBlock, "attention": LocalAttention, "retrieval": RetrievalAttention,
}


class ResidualBlock(nn.Module):
    def __init__(self, config: ModelConfig, block_type: str):
        super().__init__()
        out_init_scale = 2.0 / config.num_layers  # keeps the residual stream's variance flat in depth
        self.temporal_norm = RMSNorm(config.width)
        self.temporal = TEMPORAL_BLOCKS[block_type](config, out_init_scale)
        self.mlp_norm = RMSNorm(config.width)
        self.mlp = GatedMLP(config.width, config.mlp_expanded_width, out_init_scale)

    def init_state(self, batch_size: int, device: torch.device | str | None) -> LayerState:
        return self.temporal.init_state(batch_size, device)

    def forward(self, x: torch.Tensor, state: LayerState, context: BlockContext) -> BlockOutput:
        """The temporal block's output, with x the residual stream after this whole block."""
        mixed = self.temporal(self.temporal_norm(x), state, context)
        x = x + mixed.x
        return mixed._replace(x=x + self.mlp(self.mlp_norm(x)))


class HybridLM(nn.Module):
    # Byte-level unless built for an imported checkpoint (a RecurrentGemma reads Gemma's vocabulary).
    tokenizer: Tokenizer = ByteTokenizer()

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Parameter(torch.randn(config.vocab_size, config.width) * math.sqrt(1.0 / config.width))
        # The reference rounds sqrt(width) to bfloat16 (its training dtype); match it exactly.
        self.embed_scale = (
            float(torch.tensor(math.sqrt(config.width)).to(torch.bfloat16))
            if config.embeddings_scale_by_sqrt_dim
            else 1.0
        )
        self.blocks = nn.ModuleList(ResidualBlock(config, t) for t in config.block_types)
        self.final_norm = RMSNorm(config.width)

    @property
    def device(self) -> torch.device:
        return self.embedding.device

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def retrieval_block(self) -> RetrievalAttention | None:
        index = self.config.retrieval_layer
        return None if index is None else self.blocks[index].temporal

    capabilities = Capabilities(memory="retrieval_block", pretrained=False, notes_in_context=False,
                                int8_serving=False, windowed_state=False)

    def add_adapters(self, rank: int) -> list[str]:
        raise ValueError("a native model learns its downstream weights (trainable='downstream'); adapters are for "
                         "imported models")

    def downstream_masks(self) -> dict[str, torch.Tensor | None]:
        """What may learn while stored pairs stay valid (None: all of a parameter; else a 0/1 mask): nothing
        that feeds the retrieval block's keys and values, so every block below it, its pre-norm, the
        key/value columns of its projection and the embedding (tied to the output layer, which stays too)."""
        block = self.retrieval_block
        if block is None:
            return {}  # nothing is downstream of a memory it does not have: it reads, is scored, learns nothing
        index = self.config.retrieval_layer
        masks: dict[str, torch.Tensor | None] = {}
        prefix = f"blocks.{index}."
        for name, param in self.named_parameters():
            if name.startswith("blocks."):
                layer = int(name.split(".")[1])
                if layer < index or name.startswith(prefix + "temporal_norm"):
                    continue
                if name == prefix + "temporal.qkv.weight":
                    mask = torch.zeros_like(param)
                    mask[:, : block.heads * block.head_dim] = 1.0  # query columns only
                    masks[name] = mask
                    continue
                masks[name] = None
            elif name == "final_norm.scale":
                masks[name] = None
        return masks

    def recall_scores(self, tokens: torch.Tensor, memory: MemoryReader,
                      state: State | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory ids, scores) of every pair the retrieval block weighed while reading `tokens`: found by
        search or followed; a pair's score is its key's cosine with a query, or its run's mean."""
        pointer = self(tokens, state, memory).pointer
        return pointer.ids, pointer.match

    def init_state(self, batch_size: int = 1) -> State:
        return State(layers=tuple(b.init_state(batch_size, self.device) for b in self.blocks), position=0,
                     tokenizer=self.tokenizer.name)

    def forward(
        self, tokens: torch.Tensor, state: State | None = None, memory: MemoryReader | None = None,
        *, last_only: bool = False,
    ) -> ModelOutput:
        """`last_only`: log-probabilities of the last position only, (B, 1, V) (prompt reads)."""
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise ValueError(f"tokens must be a (batch, time) tensor with time >= 1, got shape {tuple(tokens.shape)}")
        if state is None:
            state = self.init_state(tokens.shape[0])
        self._check_state(state, tokens)
        context = BlockContext(position=state.position, tokens=tokens, memory=memory)
        x = F.embedding(tokens, self.embedding) * self.embed_scale  # (B, T, D)
        new_layers: list[LayerState] = []
        memory_kv: MemoryKV | None = None
        pointer: MemoryPointer | None = None
        for block, layer_state in zip(self.blocks, state.layers):
            out = block(x, layer_state, context)
            x = out.x
            new_layers.append(out.state)
            if out.memory_kv is not None:
                memory_kv, pointer = out.memory_kv, out.pointer
        logits = self.unembed(x)
        log_probs = logits.log_softmax(-1) if pointer is None else mix_pointer(logits, pointer)
        if last_only:
            log_probs = log_probs[:, -1:]
        new_state = State(layers=tuple(new_layers), position=state.position + tokens.shape[1],
                          tokenizer=state.tokenizer).detach()
        return ModelOutput(log_probs=log_probs, state=new_state, memory_kv=memory_kv, pointer=pointer)

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        logits = (self.final_norm(x) @ self.embedding.T.type_as(x)).float()  # (B, T, V)
        return soft_cap(logits, self.config.logits_soft_cap)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return next_token_loss(logits, targets)

    def _check_state(self, state: State, tokens: torch.Tensor) -> None:
        state.check_tokenizer(self.tokenizer.name)
        kinds = [layer_kind(s) for s in state.layers]
        expected = list(self.config.block_types)
        readable = [isinstance(layer, block.temporal.reads_states) for layer, block in zip(state.layers, self.blocks)]
        if len(kinds) != len(expected) or not all(readable):
            raise ValueError(f"state has layers {kinds} but this model has {expected}: it belongs to another model")
        if state.batch_size != tokens.shape[0]:
            raise ValueError(f"state batch size {state.batch_size} != tokens batch size {tokens.shape[0]}")

    def save(self, path: str | Path) -> None:
        """A directory with safetensors weights and the JSON config."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.state_dict().items()}
        save_file(tensors, path / WEIGHTS_FILE, metadata={"format": "lifelong.HybridLM"})
        (path / CONFIG_FILE).write_text(self.config.to_json())

    @staticmethod
    def read(path: str | Path, device: torch.device | str = "cpu") -> tuple[ModelConfig, dict[str, torch.Tensor]]:
        """A saved model's config and raw weights, without building it."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a saved model: expected {CONFIG_FILE} and {WEIGHTS_FILE} in it")
        return ModelConfig.from_json((path / CONFIG_FILE).read_text()), load_file(
            path / WEIGHTS_FILE, device=str(device)
        )

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> HybridLM:
        config, weights = cls.read(path, device)
        model = cls(config)
        model.load_state_dict(weights)
        return model.to(device)
