"""The KV cache: every layer's keys and values, preallocated and filled in place, so that each step of the
loop feeds only its new tokens. It owns its writes and its length; beam search reorders its rows,
activation patching copies a prefix into a fresh one, assisted decoding rolls it back."""

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

    @property
    def max_len(self) -> int:
        return self.keys.size(3)

    @property
    def batch_size(self) -> int:
        return self.keys.size(1)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one layer's keys and values of this call [B, H, T, D] after those stored; return all of
        them so far [B, H, length + T, D]. The model calls advance(T) once every layer has written."""
        start, end = self.length, self.length + k.size(2)
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, tokens: int) -> None:
        self.length += tokens

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
