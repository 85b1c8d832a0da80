"""Activation patching: run the corrupted prompt with one activation taken from the clean run, and see
how far that moves a metric back towards the clean one. Done for every layer and position (or head).

    results = activation_patching(model, clean_ids, corrupted_ids, metric, point="resid_pre")  # [L, T]
    metric = lambda logits: logits[:, paris] - logits[:, rome]   # last position's logits [N, V] -> [N]

Points and what each sweep returns:
    "resid_pre", "attn_out", "mlp_out"   by layer and position                [n_layer, T]
    "z" (each head's output)             by layer and head (all positions)    [n_layer, H]
                                         or by layer, head and position       [n_layer, H, T] (per_position=True)

Patches run in batches. A patch at position p changes nothing before p, so the patches that start at p
share the corrupted run's cached keys and values for positions 0..p-1 and only run the tokens from p on.

attribution_patching estimates the same sweep from two runs instead of one per patch: the metric of the
corrupted run plus (clean - corrupted activation) . (the metric's gradient there, in the corrupted run),
the first-order change a patch makes. It returns the same layout, so plots take either.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from .internals import run_with_cache

HOOKS = {
    "resid_pre": "blocks.{}.hook_resid_pre",
    "attn_out": "blocks.{}.hook_attn_out",
    "mlp_out": "blocks.{}.hook_mlp_out",
    "z": "blocks.{}.attn.hook_z",
}


@torch.inference_mode()
def activation_patching(
    model,
    clean_ids: torch.Tensor,
    corrupted_ids: torch.Tensor,
    metric: Callable[[torch.Tensor], torch.Tensor],
    *,
    point: str = "resid_pre",
    per_position: bool = True,
    batch_size: int = 32,
) -> torch.Tensor:
    """Metric of the corrupted run with each single patch from the clean run, in a tensor laid out as the
    module's docstring says. metric: the last position's logits [N, V] -> [N], one value per run."""
    L, T = _check_sweep(model, clean_ids, corrupted_ids, point)
    H = model.config.n_head
    names = [HOOKS[point].format(layer) for layer in range(L)]
    _, clean = run_with_cache(model, clean_ids, names)
    if point == "z":
        patches = [(layer, head, position) for layer in range(L) for head in range(H) for position in range(T)]
        if not per_position:
            patches = [(layer, head, None) for layer in range(L) for head in range(H)]
    else:
        patches = [(layer, None, position) for layer in range(L) for position in range(T)]
    values = run_patches(model, corrupted_ids, clean, names, patches, metric, batch_size)
    shape = (L, T) if point != "z" else (L, H, T) if per_position else (L, H)
    return values.view(shape)


def _check_sweep(model, clean_ids, corrupted_ids, point: str) -> tuple[int, int]:
    if point not in HOOKS:
        raise ValueError(f"point must be one of {', '.join(HOOKS)}, got {point!r}")
    if clean_ids.shape != corrupted_ids.shape or clean_ids.size(0) != 1:
        raise ValueError(
            "clean and corrupted prompts must be one row each of the same length, "
            f"got {list(clean_ids.shape)} and {list(corrupted_ids.shape)}"
        )
    return model.config.n_layer, clean_ids.size(1)


def run_patches(model, corrupted_ids, clean: dict, names: list[str], patches, metric, batch_size: int):
    """[len(patches)] metric values; a patch is (layer, head or None for all, position or None for all)."""
    T = corrupted_ids.size(1)
    prefix = model.new_cache(1, T)
    model(corrupted_ids, prefix)  # the corrupted run, once: its keys and values serve every patch's prefix
    values = torch.empty(len(patches))
    by_start = defaultdict(list)
    for index, (_, _, position) in enumerate(patches):
        by_start[position or 0].append(index)
    for start, indices in by_start.items():
        for chunk in (indices[i : i + batch_size] for i in range(0, len(indices), batch_size)):
            n = len(chunk)
            cache = model.new_cache(n, T)
            cache.copy_prefix(prefix, start)
            hooks = _patching_hooks([patches[i] for i in chunk], clean, names, start)
            logits = model(corrupted_ids[:, start:].expand(n, -1), cache, hooks=hooks)[:, -1]
            values[chunk] = metric(logits).float().cpu()
    return values


def _patching_hooks(patches, clean: dict, names: list[str], start: int) -> dict:
    """{hook name: fn} that put the clean activation in place, for each row's own patch. The activations
    seen here cover positions start.. only."""
    rows_of = defaultdict(list)
    for row, (layer, head, position) in enumerate(patches):
        rows_of[layer].append((row, head, position))

    def patcher(layer):
        source = clean[names[layer]][0, start:]  # [t, C] or [t, H, D]

        def patch(x):
            x = x.clone()
            for row, head, position in rows_of[layer]:
                where = slice(None) if position is None else position - start
                if head is None:
                    x[row, where] = source[where]
                else:
                    x[row, where, head] = source[where, head]
            return x

        return patch

    return {names[layer]: patcher(layer) for layer in rows_of}


def attribution_patching(
    model,
    clean_ids: torch.Tensor,
    corrupted_ids: torch.Tensor,
    metric: Callable[[torch.Tensor], torch.Tensor],
    *,
    point: str = "resid_pre",
    per_position: bool = True,
) -> torch.Tensor:
    """activation_patching's sweep, estimated to first order: metric(corrupted) + (clean - corrupted) .
    d metric / d activation at the corrupted run, summed over the activation's last dimension (the
    stream's width, or a head's), in activation_patching's layout. One clean run, one corrupted run with
    its backward pass, whatever the number of patches."""
    L, T = _check_sweep(model, clean_ids, corrupted_ids, point)
    names = [HOOKS[point].format(layer) for layer in range(L)]
    _, clean = run_with_cache(model, clean_ids, names)
    logits, corrupted = run_with_cache(model, corrupted_ids, names, grad_of=lambda logits: metric(logits[:, -1]).sum())
    base = metric(logits[:, -1]).float().sum().item()
    effects = (
        torch.stack([((clean[n] - corrupted[n]) * corrupted[n + "_grad"]).sum(dim=-1)[0] for n in names]).float().cpu()
    )  # [L, T] or, for z, [L, T, H]
    if point != "z":
        return base + effects
    return base + (effects.transpose(1, 2) if per_position else effects.sum(dim=1))  # [L, H, T] or [L, H]
