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


class SlotWrites:
    """How the fixed-shape step writes into a cache: the new token's keys and values go into `slot` (a
    tensor [1], so that no shape or constant changes between steps), and attention reads every slot of
    the cache, the mask hiding those not written yet."""

    def __init__(self, cache: KVCache, slot: torch.Tensor):
        self.cache, self.slot = cache, slot

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.cache.keys[layer].index_copy_(2, self.slot, k)
        self.cache.values[layer].index_copy_(2, self.slot, v)
        return self.cache.keys[layer], self.cache.values[layer]  # [B, H, max_len, D]


def decode_step(model, tokens: torch.Tensor, cache: KVCache, slot: torch.Tensor, visible: torch.Tensor):
    """Next-token logits [B, V] for one new token per row, with the same shapes at every step.

    tokens [B, 1] go into cache slot `slot`; visible [B, max_len] marks the slots each row attends to:
    its real tokens so far, this one included. The caller keeps cache.length.
    """
    positions = visible.sum(dim=-1, keepdim=True) - 1  # [B, 1]: real tokens before this one
    mask = Mask(visible[:, None, None, :])
    return model.compute_logits(tokens, positions, mask, SlotWrites(cache, slot), Hook())[:, -1]


def compiled_step(model):
    if model not in _compiled:
        _compiled[model] = torch.compile(decode_step, mode="reduce-overhead", fullgraph=True)
    return _compiled[model]


def scorer(model, T: int, mask, cache: KVCache, prompt: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """As the loop's scorer: the prompt through `prompt` (one ordinary forward pass that fills the cache),
    then every token through the compiled step."""
    step = compiled_step(model)
    rows = cache.batch_size
    visible = torch.zeros(rows, cache.max_len, dtype=torch.bool, device=cache.keys.device)  # [R, max_len]
    visible[:, :T] = True if mask is None else mask[:, :T].bool()
    # The cache is written inside the compiled step: CUDA graphs may only do that to a tensor that stays put.
    torch._dynamo.mark_static_address(cache.keys)
    torch._dynamo.mark_static_address(cache.values)

    def next_logits(sequences):
        i = sequences.size(1)
        if i == T:
            return prompt(sequences)
        visible[:, i - 1] = True
        slot = torch.tensor([i - 1], device=sequences.device)
        logits = step(model, sequences[:, i - 1 : i], cache, slot, visible)
        cache.advance(1)
        return logits

    return next_logits
