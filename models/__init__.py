"""Pure-PyTorch hybrid language model: tokenizer, layers, streaming state, generation.

Knows nothing of SQL, FAISS, HTTP or Celery; memory arrives through `MemoryReader`.
"""


from models.config import ModelConfig
from models.generate import SamplingConfig, compile_decoder, generate
from models.memory import MemoryKV, MemoryReader, RetrievedMemory, TensorMemory
from models.model import HybridLM, ModelOutput
from models.protocol import LanguageModel
from models.state import State, StateFormatError
from models.tokenizer import ByteTokenizer, Special

__all__ = [
    "ByteTokenizer",
    "HybridLM",
    "LanguageModel",
    "MemoryKV",
    "MemoryReader",
    "ModelConfig",
    "ModelOutput",
    "RetrievedMemory",
    "SamplingConfig",
    "Special",
    "State",
    "StateFormatError",
    "TensorMemory",
    "compile_decoder",
    "generate",
]
