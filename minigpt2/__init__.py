"""minigpt2: GPT-2 from scratch in PyTorch, loading the official checkpoints."""

from .checkpoint import CheckpointError
from .model import GPT2, PRESETS, GPT2Config, KVCache
from .tokenizer import Tokenizer

__all__ = ["GPT2", "GPT2Config", "PRESETS", "KVCache", "Tokenizer", "CheckpointError"]
__version__ = "0.1.0"
