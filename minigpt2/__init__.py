"""minigpt2: GPT-2 from scratch in PyTorch, loading the official checkpoints.

The house, bottom up: checkpoint.py finds a checkpoint's files once; model.py is the model (with the
named points of hooks.py and the cache of cache.py); loading/ builds a model from a checkpoint, with
int8 (quantize.py) or fast kernels (kernels.py) swapped in where asked; tokenizer/ reads its tokenizer;
generation/ runs the loop; internals.py, attribution.py, patching.py and scoring.py look inside and
score; explore/ and gguf.py write pages and files; cli/ is the command.
"""

import warnings

# torch warns on import when NumPy is not installed; minigpt2 never uses NumPy, so it is only noise.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

from . import generation, internals, loading, scoring  # noqa: E402
from .cache import KVCache  # noqa: E402
from .checkpoint import Checkpoint, CheckpointError, resolve  # noqa: E402
from .generation import GenerationConfig  # noqa: E402
from .loading import LoadOptions, load  # noqa: E402
from .model import GPT2, PRESETS, GPT2Config  # noqa: E402
from .tokenizer import Tokenizer  # noqa: E402

# The front doors: each tool imports the model, never the reverse, and the package hands the model its
# tools here, so that `GPT2.from_pretrained(...)`, `model.generate(...)` and `model.run_with_cache(...)` work.
GPT2.from_pretrained = classmethod(loading.from_pretrained)
GPT2.generate = generation.generate
GPT2.stream = generation.stream
GPT2.run_with_cache = internals.run_with_cache
GPT2.attention_patterns = internals.attention_patterns
GPT2.logit_lens = internals.logit_lens
GPT2.score = scoring.score

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
    "load",
    "resolve",
]
__version__ = "0.1.0"
