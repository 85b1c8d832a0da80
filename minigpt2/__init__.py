"""minigpt2: GPT-2 from scratch in PyTorch, loading the official checkpoints.

The house, bottom up: config.py (GPT2Config) and checkpoint.py (a checkpoint's files, found once);
tokenizer/; the model's parts (hooks.py, cache.py, mask.py, nonlinearities.py); the wings, which never
import the model: loading/, generation/, interp/, scoring.py; then model.py, whose GPT2 takes each
wing's front doors through a mixin; and above it the tools: explore/, gguf.py, parity/, testing/,
lm_eval/, training/, and cli/, the command.
"""

import warnings

# torch warns on import when NumPy is not installed; minigpt2 never uses NumPy, so it is only noise.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

from . import (
    loading,  # noqa: E402
    moved,  # noqa: E402, F401  (old module paths, such as minigpt2.internals, keep working)
)
from .cache import KVCache  # noqa: E402
from .checkpoint import Checkpoint, CheckpointError, resolve  # noqa: E402
from .config import PRESETS, GPT2Config  # noqa: E402
from .explore import explore  # noqa: E402  (minigpt2.explore(...) is the function; its module is minigpt2.explore)
from .generation import GenerationConfig  # noqa: E402
from .loading import LoadOptions  # noqa: E402
from .model import GPT2  # noqa: E402
from .tokenizer import Tokenizer  # noqa: E402


def load(name_or_path, *, revision: str | None = None, base=None, **options) -> tuple[GPT2, Tokenizer]:
    """The model and its tokenizer, from one resolution of the checkpoint (so, from the same snapshot);
    arguments as for GPT2.from_pretrained."""
    return loading.load(GPT2, name_or_path, revision=revision, base=base, **options)


__all__ = [
    "GPT2",
    "GPT2Config",
    "PRESETS",
    "KVCache",
    "Tokenizer",
    "Checkpoint",
    "CheckpointError",
    "GenerationConfig",
    "LoadOptions",
    "explore",
    "load",
    "resolve",
]
__version__ = "0.1.0"
