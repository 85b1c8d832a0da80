"""How the benchmark times and compares: medians of interleaved rounds, the bytes a decode step reads,
and how far an approximation's logits and tokens are from its exact model."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import torch

from minigpt2.checkpoint import resolve


def median_rates(runs: dict, rounds: int, progress: str | None = None) -> dict:
    """{name: fn() -> work done} -> {name: median work per second}, timing the entries in turn each round,
    so that a noisy machine slows them all alike. With progress, a line on stderr before each round."""
    for fn in runs.values():
        fn()  # warm-up (and, for compile=True, the compiling)
    rates = {name: [] for name in runs}
    for i in range(rounds):
        if progress:
            print(f"{progress}: round {i + 1} of {rounds}", file=sys.stderr, flush=True)
        for name, fn in runs.items():
            sync()
            started = time.perf_counter()
            work = fn()
            sync()
            rates[name].append(work / (time.perf_counter() - started))
    return {name: statistics.median(r) for name, r in rates.items()}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def weight_bytes(model) -> int:
    """The bytes a decode step reads: every parameter and buffer (int8 rows and their scales included) but
    the position embedding and, unless it is also the LM head, the token embedding: of those only a row is
    looked up."""
    head = {id(t) for t in model.lm_head.parameters()}
    lookups = {id(model.wpe.weight)} | ({id(model.wte.weight)} - head)
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()] if id(t) not in lookups)


def deviation(exact_logits, approx_logits, exact_tokens: list[int], approx_tokens: list[int]) -> dict:
    """How far an approximation is from its exact model: the largest logit difference relative to the exact
    logits' range, top-1 agreement over every position, and how many greedy tokens agree before the first
    that differs."""
    exact_logits, approx_logits = exact_logits.float(), approx_logits.float()
    relative = ((approx_logits - exact_logits).abs().max() / (exact_logits.max() - exact_logits.min())).item()
    top1 = (approx_logits.argmax(-1) == exact_logits.argmax(-1)).float().mean().item()
    pairs = zip(exact_tokens, approx_tokens, strict=True)
    match = next((i for i, (a, b) in enumerate(pairs) if a != b), len(exact_tokens))
    return {
        "max_logit_difference_of_range": relative,
        "top1_agreement": top1,
        "greedy_match_length": match,
        "tokens_compared": len(exact_tokens),
    }


def minigpt2_deviation(exact, approx, prompt, new_tokens: int) -> dict:
    """`approx` (a lower precision, int8, or fast kernels' rounding) against minigpt2's default fp32: logits
    over the prompt and fp32's greedy continuation, computed as the decode loop does, and greedy tokens."""
    with torch.inference_mode():
        exact_tokens = exact.generate(prompt, max_new_tokens=new_tokens)
        approx_tokens = approx.generate(prompt, max_new_tokens=new_tokens)[0, prompt.size(1) :].tolist()
        approx_logits = decoded_logits(approx, exact_tokens, prompt.size(1))
        exact_logits = decoded_logits(exact, exact_tokens, prompt.size(1))
    return deviation(exact_logits, approx_logits, exact_tokens[0, prompt.size(1) :].tolist(), approx_tokens)


def decoded_logits(model, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """[T, V] logits at every position of ids [1, T], as the loop computes them: the prompt in one
    forward pass, then one token at a time through the KV cache (the few-row products of decoding)."""
    cache = model.new_cache(1, ids.size(1))
    rows = [model(ids[:, :prompt_len], cache)[0]]
    rows += [model(ids[:, t : t + 1], cache)[0] for t in range(prompt_len, ids.size(1))]
    return torch.cat(rows)


# Run in a fresh interpreter: load a checkpoint and report seconds, and peak resident memory growth
# after loading and after a first forward pass (which touches every weight).
LOAD_PROBE = """
import sys, time, torch
def rss(field):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field))
which, path, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
if which.startswith("minigpt2"):
    from minigpt2 import GPT2
    load = lambda: GPT2.from_pretrained(path, dtype=dtype, fast=which.endswith("fast"))
else:
    from transformers import GPT2LMHeadModel
    load = lambda: GPT2LMHeadModel.from_pretrained(path, dtype=dtype)
before = rss("VmRSS:")
started = time.perf_counter()
model = load()
seconds = time.perf_counter() - started
peak_loading = rss("VmHWM:") - before  # safetensors are memory-mapped: pages come in at first use
with torch.inference_mode():
    model(torch.tensor([[0, 1, 2, 3]]))
print(seconds, time.perf_counter() - started, peak_loading, rss("VmHWM:") - before)
"""


def load_figures(path: str, dtype: str) -> dict:
    """Seconds and peak memory growth of each library's from_pretrained, in a fresh process each, from a warm
    file cache (warm_file_cache first)."""
    figures = {}
    libraries = ("minigpt2", "transformers") + (("minigpt2 fast",) if dtype == "float32" else ())
    for which in libraries:
        seconds, with_forward, peak_loading, peak_forward = _load_probe(which, path, dtype)
        figures[which] = {
            "seconds": seconds,
            "seconds_with_first_forward": with_forward,
            "peak_rss_loading": peak_loading,
            "peak_rss_first_forward": peak_forward,
        }
    return figures


def warm_file_cache(path: str) -> None:
    """Read the checkpoint's files once, not measured, so that every measured load reads them from the page
    cache."""
    for file in resolve(path).folder.iterdir():  # a folder, or a hub name's snapshot
        if file.is_file():
            with open(file, "rb") as f:
                while f.read(1 << 24):
                    pass


def _load_probe(which: str, path: str, dtype: str) -> tuple[float, ...]:
    done = subprocess.run(
        [sys.executable, "-c", LOAD_PROBE, which, path, dtype], capture_output=True, text=True, check=True
    )
    return tuple(float(x) for x in done.stdout.split()[-4:])
