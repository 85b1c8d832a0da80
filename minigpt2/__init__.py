"""minigpt2: GPT-2 from scratch in PyTorch, loading the official checkpoints."""

import warnings

# torch warns on import when NumPy is not installed; minigpt2 never uses NumPy, so it is only noise.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

from .checkpoint import CheckpointError  # noqa: E402
from .linear import onednn_matmuls  # noqa: E402
from .model import GPT2, PRESETS, GPT2Config, KVCache  # noqa: E402
from .tokenizer import Tokenizer  # noqa: E402

__all__ = ["GPT2", "GPT2Config", "PRESETS", "KVCache", "Tokenizer", "CheckpointError", "onednn_matmuls"]
__version__ = "0.1.0"
