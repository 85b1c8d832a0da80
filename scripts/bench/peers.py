"""What the benchmark measures minigpt2 against besides transformers: llama.cpp, on GGUF files of the same
checkpoint (written by minigpt2.gguf), decoded greedily through llama-cpp-python with the same threads,
prompt and token count; and the machine's read bandwidth, the bound of batch-1 decoding.

llama.cpp needs the bench extra: pip install -e ".[bench]" (llama-cpp-python compiles llama.cpp: minutes).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from minigpt2 import GPT2, resolve
from minigpt2.gguf import export_gguf, vocabulary
from minigpt2.loading import LoadOptions, load_model

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
    checkpoint = resolve(path)
    model = load_model(checkpoint, LoadOptions(), GPT2)
    try:
        tokens, merges, special = vocabulary(checkpoint)
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


# The read bandwidth, measured by a plain C loop rather than a torch kernel: every thread sums its share of
# an array far larger than the caches, with 16 independent accumulators so the adds never wait on each other.
# Compiled at run time with the system's C compiler and OpenMP.
SOURCE = r"""
#include <stddef.h>
float read_all(const float *a, size_t n, int threads) {
    float total = 0;
    #pragma omp parallel num_threads(threads) reduction(+:total)
    {
        float acc[16] = {0};
        #pragma omp for schedule(static)
        for (size_t i = 0; i < n - n % 16; i += 16)
            for (int j = 0; j < 16; j++) acc[j] += a[i + j];
        for (int j = 0; j < 16; j++) total += acc[j];
    }
    return total;
}
"""


def c_read_probe(n_bytes: int, threads: int):
    """A run for median_rates that reads n_bytes once and returns the bytes read; or (None, why not)."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None, "no C compiler (set CC): the bound comes from torch's probes alone"
    folder = Path(tempfile.mkdtemp())
    (folder / "read.c").write_text(SOURCE)
    build = [compiler, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "read.c", "-o", "libread.so"]
    done = subprocess.run(build, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"the C probe did not compile ({done.stderr.strip().splitlines()[-1:]})"
    library = ctypes.CDLL(str(folder / "libread.so"))
    library.read_all.restype = ctypes.c_float
    library.read_all.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    array = torch.ones(n_bytes // 4)

    def run():
        library.read_all(array.data_ptr(), array.numel(), threads)
        return array.numel() * 4

    return run, None


def bandwidth_probes(n_bytes: int, device) -> tuple[dict, str | None]:
    """Runs for median_rates that read an fp32 matrix of n_bytes once and return the bytes read, and why
    the C probe is missing (or None).

    "C read loop" (the CPU): the threaded C loop above, the honest bound; "mv": torch.mv, the
    matrix-vector product the bound is usually probed with; "oneDNN": its product on a matrix in the
    order it reads fastest (the CPU); "sum": a plain reduction. The bound is the fastest of them.
    """
    from minigpt2.loading.kernels import KERNELS

    columns = 1024
    matrix = torch.randn(n_bytes // 4 // columns, columns, device=device)
    vector = torch.randn(columns, device=device)
    read = matrix.numel() * 4

    def probe(kernel):
        def run():
            with torch.inference_mode():
                kernel()
            return read

        return run

    probes = {"mv": probe(lambda: torch.mv(matrix, vector)), "sum": probe(matrix.sum)}
    why_not = "on the GPU, torch's probes" if device.type != "cpu" else None
    if device.type == "cpu" and "oneDNN" in KERNELS:
        probes["oneDNN"] = probe(lambda: KERNELS["oneDNN"](vector[None], matrix, None))
        c_loop, why_not = c_read_probe(n_bytes, torch.get_num_threads())
        if c_loop is not None:
            probes["C read loop"] = c_loop
    return probes, why_not
