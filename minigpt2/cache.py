"""The KV cache: every layer's keys and values, preallocated and filled in place, so that each step of the
loop feeds only its new tokens. It is the only writer of its tensors and of its length, as gpt-fast's
KVCache is: a forward pass reserves the slots of its tokens (reserve), and every layer writes there
(write), in the eager forward and in the compiled decode step alike; beam search reorders its rows
(reorder), activation patching copies a prefix into a fresh one (copy_prefix), assisted decoding rolls
it back (rollback)."""

from __future__ import annotations

import torch


class KVCache:
    """keys, values [n_layer, B, H, max_len, D]; `length` counts the tokens stored, and the next call
    writes after them."""

    def __init__(self, config, batch_size: int, max_len: int, *, device=None, dtype=None):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.slots: slice | torch.Tensor = slice(0, 0)  # where this call's tokens go (reserve)

    @property
    def max_len(self) -> int:
        return self.keys.size(3)

    @property
    def batch_size(self) -> int:
        return self.keys.size(1)

    def reserve(self, tokens: int, slots: torch.Tensor | None = None) -> None:
        """Count the next call's tokens as stored, and point its writes at their slots: those after the tokens
        stored, or `slots`, a tensor of positions (the compiled decode step's: a tensor, not a number, so that
        nothing the compiled code reads changes between steps)."""
        self.slots = slice(self.length, self.length + tokens) if slots is None else slots
        self.length += tokens

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one layer's keys and values of this call [B, H, T, D] in the reserved slots, and return what
        attention reads: every token so far [B, H, length, D]; or, for slots given as a tensor, every slot
        [B, H, max_len, D], the mask hiding those not written yet."""
        if isinstance(self.slots, slice):
            self.keys[layer, :, :, self.slots] = k
            self.values[layer, :, :, self.slots] = v
            return self.keys[layer, :, :, : self.slots.stop], self.values[layer, :, :, : self.slots.stop]
        self.keys[layer].index_copy_(2, self.slots, k)
        self.values[layer].index_copy_(2, self.slots, v)
        return self.keys[layer], self.values[layer]

    def rollback(self, length: int) -> None:
        """Forget every token from `length` on (a rejected draft): the next call writes there."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll a cache of {self.length} tokens back to {length}")
        self.length = length

    def copy_prefix(self, source: KVCache, length: int) -> None:
        """Start from the first `length` tokens of another cache (one row of it, broadcast to every row here)."""
        self.keys[:, :, :, :length] = source.keys[:, :, :, :length]
        self.values[:, :, :, :length] = source.values[:, :, :, :length]
        self.length = length

    def reorder(self, parents: list[int]) -> None:
        """Row i becomes what row parents[i] was, in place. Rows that keep their beam are not touched, and a
        row is overwritten only once no other row still has to be copied from it; rows that swap (a
        cycle) set one row aside, the only copy beyond the rows that change."""
        keys, values = self.keys[:, :, :, : self.length], self.values[:, :, :, : self.length]  # [L, R, H, S, D]
        pending = {row: p for row, p in enumerate(parents) if p != row}  # row -> the row (or saved copy) it becomes
        while pending:
            still_read = {source for source in pending.values() if isinstance(source, int)}
            ready = [row for row in pending if row not in still_read]
            if not ready:  # only cycles are left: set one row aside, and let its readers copy from that
                row = next(iter(pending))
                saved = (keys[:, row].clone(), values[:, row].clone())
                pending = {r: saved if source == row else source for r, source in pending.items()}
                continue
            for row in ready:
                source = pending.pop(row)
                k, v = (keys[:, source], values[:, source]) if isinstance(source, int) else source
                keys[:, row] = k
                values[:, row] = v
