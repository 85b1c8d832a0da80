"""The generation wing: the loop (loop.py: greedy and sampling, a prefill then one decode step per token),
its options (config.py: GenerationConfig), beam search (beam.py), logits processors (processors.py), stop
criteria (stopping.py), assisted and prompt-lookup decoding (assisted.py), the compiled step (compiled.py),
and model.generate / model.stream (mixin.py)."""

from .config import GenerationConfig
from .loop import generate, run_to_end, stream
from .steps import GenerateOutput, Step

__all__ = ["GenerateOutput", "GenerationConfig", "Step", "generate", "run_to_end", "stream"]
