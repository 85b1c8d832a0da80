"""The named activation points of a forward pass, as TransformerLens names them, and the dispatcher that
runs a caller's functions at them. minigpt2/internals.py documents every name with its shape."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class Hook:
    """hook(name, x) passes x through hooks[name] when there is one: the function may record x, or return
    a tensor to use instead (an intervention). With no hooks it returns x and costs a dict lookup."""

    def __init__(self, hooks: dict[str, Callable] | None = None):
        self.hooks = hooks or {}

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        fn = self.hooks.get(name)
        if fn is None:
            return x
        replaced = fn(x)
        return x if replaced is None else replaced

    def wants(self, *names: str) -> bool:
        return any(name in self.hooks for name in names)


def hook_names(n_layer: int) -> list[str]:
    """Every named point of a model with n_layer blocks, in the order the forward pass reaches them."""
    names = ["hook_embed", "hook_pos_embed"]
    for i in range(n_layer):
        p, a, m = f"blocks.{i}.", f"blocks.{i}.attn.", f"blocks.{i}.mlp."
        names += [p + "hook_resid_pre", p + "ln1.hook_scale", p + "ln1.hook_normalized"]
        names += [a + n for n in ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z")]
        names += [a + "hook_result", p + "hook_attn_out", p + "hook_resid_mid"]
        names += [p + "ln2.hook_scale", p + "ln2.hook_normalized"]
        names += [m + "hook_pre", m + "hook_post", p + "hook_mlp_out", p + "hook_resid_post"]
    return [*names, "ln_final.hook_scale", "ln_final.hook_normalized"]


def check_names(all_names: list[str], names: Iterable[str]) -> None:
    """A misspelt name would silently capture or change nothing: refuse it."""
    unknown = sorted(set(names) - set(all_names))
    if unknown:
        raise ValueError(
            f"no activation named {unknown[0]!r}; names look like 'blocks.0.hook_resid_pre' (see model.hook_names())"
        )
