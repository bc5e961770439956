"""The serving side of weight versions: a model that follows its agent's newest version without a restart.

Between requests, `refresh()` asks SQL for the agent's newest version number (one indexed query) and,
when it moved, builds the new weights beside the old ones and swaps one reference. A request that
took `current()` before the swap finishes on the weights it started with; none is dropped or sees a
half-updated model.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import NamedTuple

import torch
from sqlalchemy.orm import Session, sessionmaker

from learner.base import load_base
from learner.gate import serving_weights
from learner.versions import latest_version, load_weights
from models import LanguageModel
from models.adapters import attach_adapters, is_adapter
from models.generate import Decoder
from models.quantize import int8_kernel_available, quantize_weights
from models.static_decode import StaticDecoder, static_decoding_fits

log = logging.getLogger(__name__)


def load_serving_base(checkpoint: str, device: str, weights: str = "int8") -> LanguageModel:
    """An agent's base model as a serving process holds it: with `weights` "int8", an imported model's
    projections as int8 where this CPU has the kernel (models.quantize); learning always reads fp32."""
    base = load_base(checkpoint, device)
    if base.capabilities.int8_serving and weights == "int8" and int8_kernel_available():
        quantize_weights(base)
    return base


class Loaded(NamedTuple):
    model: LanguageModel
    version: int
    # Its single-token steps (models.static_decode), once compiled for it; None: the model's own forward.
    decoder: Decoder | None = None


class ServingModel:
    """One agent's model for serving: the base checkpoint plus the newest learned overlay."""

    def __init__(self, *, sessions: sessionmaker[Session], agent_id: int, base: LanguageModel,
                 compiled_decode: bool = False):
        self.sessions = sessions
        self.agent_id = agent_id
        self._base = base.eval()
        self._compiled_decode = compiled_decode and static_decoding_fits(base)
        self._current = Loaded(base, 0)
        self._swap_lock = threading.Lock()  # one build at a time; readers never wait for it
        if not self.refresh():
            self._compile_decoder(self._current)

    def current(self) -> Loaded:
        """The model and version to use for one whole request."""
        return self._current

    @property
    def version(self) -> int:
        return self._current.version

    def refresh(self) -> bool:
        """Swap to the agent's newest version if it moved; returns whether it did."""
        with self.sessions() as db:
            newest = latest_version(db, self.agent_id)
        if newest == self._current.version:
            return False
        with self._swap_lock:
            with self.sessions() as db:
                # Read again with the weights: a version seen a moment ago may have been pruned since.
                newest = latest_version(db, self.agent_id)
                if newest == self._current.version:
                    return False
                weights = serving_weights(load_weights(db, self.agent_id, newest))
            self._current = Loaded(self._build(weights), newest)
        self._compile_decoder(self._current)
        return True

    def _compile_decoder(self, loaded: Loaded) -> None:
        """Compile `loaded`'s decoder in a thread (a minute and more the first time a structure is compiled on a
        machine), then serve it with the model if that is still the current one; until then replies decode
        through the model's forward. A model whose structure is compiled already takes seconds."""
        if not self._compiled_decode:
            return

        def compile_and_swap() -> None:
            try:
                decoder = StaticDecoder(loaded.model).warm_up()
            except Exception:  # a compiler missing or failing costs speed, never a reply
                log.exception("agent %s: compiling the decode step failed; decoding through the model instead",
                              self.agent_id)
                return
            with self._swap_lock:
                if self._current is loaded:
                    self._current = loaded._replace(decoder=decoder)

        threading.Thread(target=compile_and_swap, name=f"compile-decoder-{self.agent_id}", daemon=True).start()

    def wait_for_decoder(self, timeout: float | None = None) -> bool:
        """Block until the current model's compiled decoder serves (tests, benchmarks); whether it does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._current.decoder is None:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @torch.no_grad()
    def _build(self, weights: dict[str, torch.Tensor]) -> LanguageModel:
        if not weights:
            return self._base
        adapters = {name: t for name, t in weights.items() if is_adapter(name)}
        weights = {name: t for name, t in weights.items() if not is_adapter(name)}
        base_params = dict(self._base.named_parameters())
        unknown = sorted(set(weights) - set(base_params))
        if unknown:
            raise ValueError(f"version weights name parameters this base model lacks: {unknown[:5]}")
        # A new module tree whose learned parameters are its own and whose other tensors are the base's,
        # shared, never written: a version of an imported model changes kilobytes of its hundreds of
        # megabytes, and copying them all cost each turn after a learning step about 300 ms.
        shared = {id(t): t for name, t in self._base.named_parameters() if name not in weights}
        shared |= {id(t): t for t in self._base.buffers()}
        shared |= {id(t): t for module in self._base.modules() for t in vars(module).values()
                   if isinstance(t, torch.Tensor)}
        shared[id(self._base.tokenizer)] = self._base.tokenizer  # immutable, and large for a real vocabulary
        model = copy.deepcopy(self._base, memo=shared)
        params = dict(model.named_parameters())
        for name, tensor in weights.items():
            params[name].copy_(tensor)
        attach_adapters(model, adapters)  # beside the int8 products, merged into the prompts' copies (models.adapters)
        return model.eval()
