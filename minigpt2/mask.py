"""Which keys each query may attend to: the attention mask, worked out once per forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Mask:
    """Which keys each query may attend to, worked out once per forward and shared by every layer.

    keys_visible: bool, broadcastable to [B, H, T, S], or None for causal (or, for one new token,
    everything); is_causal: let scaled_dot_product_attention apply its own square causal mask.
    """

    keys_visible: torch.Tensor | None = None
    is_causal: bool = False

    @classmethod
    def for_call(cls, T: int, start: int, attention_mask: torch.Tensor | None, device) -> Mask:
        """Queries are the T tokens of this call, at positions start..start+T-1; keys are all S = start + T
        tokens so far. Without padding a query sees every key up to its own position, which
        scaled_dot_product_attention does by itself (is_causal) or needs no mask for (one new token).
        With padding (attention_mask 0), padded keys are hidden too, except from the padded query
        itself: a query must see at least one key, and a padded query's output is never used.
        """
        if attention_mask is None:
            if T == 1:
                return cls()
            return cls(is_causal=True) if start == 0 else cls(_causal(T, start + T, device))  # [T, S]
        query_pos = torch.arange(start, start + T, device=device)[:, None]
        own_key = torch.arange(start + T, device=device) == query_pos  # [T, S]
        real_key = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, S]
        return cls((_causal(T, start + T, device) & real_key) | own_key)  # [B, 1, T, S]

    def full(self, T: int, S: int, device) -> torch.Tensor:
        """The mask as a bool tensor, for attention written out by hand."""
        return _causal(T, S, device) if self.keys_visible is None else self.keys_visible


def _causal(T: int, S: int, device) -> torch.Tensor:
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)  # query i sees keys 0..S-T+i
