"""llama.cpp as the benchmark's peer: GGUF files of the same checkpoint (written by minigpt2.gguf), decoded
greedily through llama-cpp-python with the same threads, prompt and token count as minigpt2.

Needs the bench extra: pip install -e ".[bench]" (llama-cpp-python compiles llama.cpp: minutes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from minigpt2 import GPT2
from minigpt2.gguf import export_gguf, vocabulary

GGUF_TYPES = ("f32", "bf16", "q8_0")


def missing() -> str | None:
    """Why llama.cpp cannot run here, or None."""
    try:
        import gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError as e:
        return f'llama.cpp left out: {e.name} is not installed (pip install -e ".[bench]")'
    return None


def write_ggufs(path: str, folder: Path, types=GGUF_TYPES) -> dict[str, Path]:
    """The checkpoint as one GGUF per type. A checkpoint without a tokenizer (the benchmark's random one)
    gets a placeholder vocabulary: the benchmark feeds token ids, and llama.cpp only needs one to load."""
    model = GPT2.from_pretrained(path)
    try:
        tokens, merges, special = vocabulary(path)
    except (OSError, ValueError):
        tokens, merges, special = placeholder_vocabulary(model.config.vocab_size)
    files = {}
    for kind in types:
        files[kind] = folder / f"model-{kind}.gguf"
        export_gguf(model, files[kind], tokens, merges, file_type=kind, special=special, name=path)
    return files


def placeholder_vocabulary(size: int) -> tuple[list[str], list[str], list[int]]:
    """GPT-2's 256 byte-level symbols, one merge, fillers, and <|endoftext|> last: a vocabulary llama.cpp loads."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    symbols = [chr(b) if b in printable else None for b in range(256)]
    unprintable = (b for b in range(256) if symbols[b] is None)
    for n, b in enumerate(unprintable):
        symbols[b] = chr(256 + n)  # GPT-2's byte-to-symbol table: "\n" is "Ċ", " " is "Ġ"
    tokens = symbols + ["Ġt"] + [f"<unused{i}>" for i in range(size - 258)] + ["<|endoftext|>"]
    return tokens, ["Ġ t"], [size - 1]


class Peer:
    """One GGUF loaded in llama.cpp, with the benchmark's run and the logits its deviation needs."""

    def __init__(self, gguf_path: Path, threads: int, n_ctx: int = 512, logits_all: bool = False):
        from llama_cpp import Llama

        self.llm = Llama(
            str(gguf_path),
            n_ctx=min(n_ctx, context_length(gguf_path)),
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=logits_all,
            verbose=False,
        )

    def greedy(self, prompt: list[int], new_tokens: int) -> list[int]:
        """Greedy decode, token by token, argmax of llama.cpp's logits (as minigpt2's loop does)."""
        llm = self.llm
        llm.reset()
        llm.eval(prompt)
        tokens = []
        for _ in range(new_tokens):
            tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval(tokens[-1:])
        return tokens

    def run(self, prompt: torch.Tensor, new_tokens: int):
        ids = prompt[0].tolist()
        return lambda: len(self.greedy(ids, new_tokens))

    def logits(self, ids: list[int]) -> torch.Tensor:
        """[T, V] logits at every position (needs logits_all=True)."""
        self.llm.reset()
        self.llm.eval(ids)
        return torch.from_numpy(np.array(self.llm.scores[: len(ids)]))


def context_length(gguf_path: Path) -> int:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields["gpt2.context_length"]
    return int(field.parts[field.data[0]][0])


def tensor_bytes(gguf_path: Path) -> int:
    """The bytes of a GGUF's tensors: what a decode step reads (the position embedding, one row of it, aside)."""
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(str(gguf_path)).tensors if t.name != "position_embd.weight")
