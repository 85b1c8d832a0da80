"""generate(compile=True): every step after the prompt runs one decode step of fixed shapes, compiled once
per model by torch.compile ("reduce-overhead": with CUDA graphs on a GPU, where launching ~300 small
kernels a token otherwise costs more than the arithmetic). The first call compiles (a minute or more);
the cache spans the whole context, so that later calls of any length reuse the compiled step.

On the CPU, compiling is not always faster: on a 2-core AVX2 EPYC the compiled fp32 step of gpt2-medium
took 3-4x eager's time in every Inductor mode tried, and on an AVX-512 Xeon bf16 ran at 0.29x. So the
first compiled step on a CPU is timed against the same step run eager; where it is not faster, generation
warns once and runs eager. The verdict is kept per machine and model shape (machine.py), so that later
runs do not compile at all."""

from __future__ import annotations

import statistics
import time
import warnings
import weakref
from collections.abc import Callable

import torch

from ..cache import KVCache
from ..hooks import Hook
from ..machine import keep, measured, record_path
from ..mask import Mask

TIMED_STEPS = 5  # compiled and eager steps timed, each, for the CPU's verdict

_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its compiled step, made once


def decode_step(model, tokens: torch.Tensor, cache: KVCache, slot: torch.Tensor, visible: torch.Tensor, step=None):
    """Next-token logits [B, V] for one new token per row, with the same shapes at every step.

    tokens [B, 1] go into cache slot `slot` (a tensor [1]); visible [B, max_len] marks the slots each row
    attends to: its real tokens so far, this one included. The cache reserves the slot here, outside the
    compiled code (its length is a number, which torch.compile would specialise on). step: the compiled
    step (the default) or _step itself, run eager.
    """
    cache.reserve(1, slots=slot)
    return (step or compiled_step(model))(model, tokens, cache, visible)


def _step(model, tokens: torch.Tensor, cache: KVCache, visible: torch.Tensor):
    positions = visible.sum(dim=-1, keepdim=True) - 1  # [B, 1]: real tokens before this one
    return model.compute_logits(tokens, positions, Mask(visible[:, None, None, :]), cache, Hook())[:, -1]


def compiled_step(model):
    if model not in _compiled:
        _compiled[model] = torch.compile(_step, mode="reduce-overhead", fullgraph=True)
    return _compiled[model]


def next_logits_fn(model, T: int, mask, cache: KVCache, prefill: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """As the loop's next_logits_fn: the prefill (the prompt through `prefill`, one ordinary forward pass
    that fills the cache), then a compiled decode step per token."""
    rows = cache.batch_size
    visible = torch.zeros(rows, cache.max_len, dtype=torch.bool, device=cache.keys.device)  # [R, max_len]
    visible[:, :T] = True if mask is None else mask[:, :T].bool()
    # The cache is written inside the compiled step: CUDA graphs may only do that to a tensor that stays put.
    torch._dynamo.mark_static_address(cache.keys)
    torch._dynamo.mark_static_address(cache.values)

    step = None

    def next_logits(sequences):
        nonlocal step
        i = sequences.size(1)
        if i == T:
            return prefill(sequences)
        visible[:, i - 1] = True
        slot = torch.tensor([i - 1], device=sequences.device)
        if step is None:
            step = step_for(model, sequences[:, i - 1 : i], cache, slot, visible)
        return decode_step(model, sequences[:, i - 1 : i], cache, slot, visible, step)

    return next_logits


def step_for(model, tokens, cache: KVCache, slot, visible):
    """The compiled step; on the CPU, only where this machine measured it faster than eager, else _step."""
    if cache.keys.device.type != "cpu":
        return compiled_step(model)
    what = f"compile=True, decode step: {_shape_of(model)}, {cache.batch_size} rows"
    verdict = measured().get(what)
    if not (isinstance(verdict, dict) and {"compiled_ms", "eager_ms"} <= verdict.keys()):
        verdict = time_compiled_against_eager(model, tokens, cache, slot, visible)
        keep({what: verdict})
    if verdict["compiled_ms"] < verdict["eager_ms"]:
        return compiled_step(model)
    warnings.warn(
        f"compile=True runs eager on this CPU: its compiled decode step took {verdict['compiled_ms']:.1f} ms "
        f"against eager's {verdict['eager_ms']:.1f} ms ({what}; kept in {record_path()}, delete it to measure again)",
        stacklevel=2,
    )
    return _step


def time_compiled_against_eager(model, tokens, cache: KVCache, slot, visible) -> dict:
    """{"compiled_ms", "eager_ms"}: the medians of TIMED_STEPS steps each, after compiling, all at the same
    slot (each writes the same keys there), the cache's length restored after."""
    length = cache.length
    compiled = compiled_step(model)
    ms = {}
    with torch.inference_mode():
        for name, step in (("compiled_ms", compiled), ("eager_ms", _step)):
            decode_step(model, tokens, cache, slot, visible, step)  # the compiled one compiles here
            times = []
            for _ in range(TIMED_STEPS):
                start = time.perf_counter()
                decode_step(model, tokens, cache, slot, visible, step)
                times.append((time.perf_counter() - start) * 1e3)
            ms[name] = round(statistics.median(times), 2)
    cache.rollback(length)
    return ms


def _shape_of(model) -> str:
    """What the verdict depends on: the model's shape, its weights' dtype and any swapped modules."""
    c, weight = model.config, model.wte.weight
    swapped = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.endswith("Linear")})
    return f"{c.n_layer} layers x {c.n_embd}, {str(weight.dtype).removeprefix('torch.')}, {'/'.join(swapped)}"
