"""generate(compile=True): every step after the prompt runs one decode step of fixed shapes, compiled once
per model by torch.compile ("reduce-overhead": with CUDA graphs on a GPU, where launching ~300 small
kernels a token otherwise costs more than the arithmetic). The first call compiles (a minute or more);
the cache spans the whole context, so that later calls of any length reuse the compiled step."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from ..cache import KVCache
from ..hooks import Hook
from ..mask import Mask

_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its compiled step, made once


def decode_step(model, tokens: torch.Tensor, cache: KVCache, slot: torch.Tensor, visible: torch.Tensor):
    """Next-token logits [B, V] for one new token per row, with the same shapes at every step.

    tokens [B, 1] go into cache slot `slot` (a tensor [1]); visible [B, max_len] marks the slots each row
    attends to: its real tokens so far, this one included. The cache reserves the slot here, outside the
    compiled code (its length is a number, which torch.compile would specialise on).
    """
    cache.reserve(1, slots=slot)
    return compiled_step(model)(model, tokens, cache, visible)


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

    def next_logits(sequences):
        i = sequences.size(1)
        if i == T:
            return prefill(sequences)
        visible[:, i - 1] = True
        slot = torch.tensor([i - 1], device=sequences.device)
        return decode_step(model, sequences[:, i - 1 : i], cache, slot, visible)

    return next_logits
