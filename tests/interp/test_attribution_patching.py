"""minigpt2/interp/patching.py's attribution_patching: for every point it sweeps, the first-order estimate
metric(corrupted) + (clean - corrupted activation) . d metric / d activation (at the corrupted run) equals the
same sum worked out here with torch.autograd over the model's hooks, and comes in activation_patching's layout.
How well the estimate ranks the patches that activation patching measures, and how much faster it is, is
printed, not asserted."""

from __future__ import annotations

import time

import pytest
import torch

from minigpt2.interp.patching import HOOKS, activation_patching, attribution_patching

SWEEPS = [  # (point, per_position): every layer x position sweep, and heads by layer x head
    ("resid_pre", True),
    ("attn_out", True),
    ("mlp_out", True),
    ("z", True),
    ("z", False),
]


def by_hand(model, clean, corrupted, metric, point, per_position):
    """The first-order estimate from scratch: the clean activations from a plain run with recording hooks;
    the gradients from the corrupted run with a zero tensor added at each point (d metric / d activation is
    d metric / d that zero), through torch.autograd.grad."""
    names = [HOOKS[point].format(layer) for layer in range(model.config.n_layer)]
    clean_acts, corrupted_acts, zeros = {}, {}, {}

    def record(store, name):
        def hook(x):
            store[name] = x.detach().clone()

        return hook

    def add_zero(name):
        def hook(x):
            zeros[name] = torch.zeros_like(x, requires_grad=True)
            return x + zeros[name]

        return hook

    with torch.no_grad():
        model(clean, hooks={name: record(clean_acts, name) for name in names})
        model(corrupted, hooks={name: record(corrupted_acts, name) for name in names})
    with torch.enable_grad():
        value = metric(model(corrupted, hooks={name: add_zero(name) for name in names})[:, -1]).sum()
        grads = torch.autograd.grad(value, [zeros[name] for name in names])
    effects = []
    for name, grad in zip(names, grads, strict=True):
        effect = ((clean_acts[name] - corrupted_acts[name]) * grad).sum(dim=-1)[0]  # [T] or, for z, [T, H]
        if point == "z":
            effect = effect.T if per_position else effect.sum(dim=0)  # [H, T] or [H]
        effects.append(effect)
    return value.item() + torch.stack(effects)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation, ties (values within 1e-5 of each other, after rounding) given their mean rank."""

    def ranks(x):
        x = (x.flatten().double() * 1e5).round()
        order = x.argsort()
        r = torch.empty_like(x)
        r[order] = torch.arange(len(x), dtype=x.dtype)
        for value in x.unique():
            same = x == value
            r[same] = r[same].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return (ra @ rb / (ra.norm() * rb.norm())).item()


def timed(fn, repeats=5) -> float:
    """The best of a few wall times, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize(("point", "per_position"), SWEEPS)
def test_attribution_equals_a_hand_computation(patching_case, point, per_position):
    model, clean, corrupted, metric = patching_case
    got = attribution_patching(model, clean, corrupted, metric, point=point, per_position=per_position)
    expected = by_hand(model, clean, corrupted, metric, point, per_position)
    diff = (got - expected).abs().max().item()
    spread = (expected - expected.flatten()[0]).abs().max().item()
    print(f"\n{point} per_position={per_position}: max |attribution - by hand| {diff:.2e} (values spread {spread:.3f})")
    assert got.shape == expected.shape and diff < 1e-5
    assert spread > 0.01  # the estimate is not the same number everywhere


@pytest.mark.parametrize(("point", "per_position"), SWEEPS)
def test_attribution_layout_and_agreement_with_activation_patching(patching_case, point, per_position):
    model, clean, corrupted, metric = patching_case
    kwargs = {"point": point, "per_position": per_position}
    activation = activation_patching(model, clean, corrupted, metric, **kwargs)
    attribution = attribution_patching(model, clean, corrupted, metric, **kwargs)
    assert type(attribution) is type(activation)
    assert (attribution.shape, attribution.dtype, attribution.device) == (
        activation.shape,
        activation.dtype,
        activation.device,
    )
    with torch.no_grad():
        corrupted_metric = metric(model(corrupted)[:, -1]).item()
    # Rank the effects (the change from the corrupted run's metric), as one reads a patching plot.
    rho = spearman(activation - corrupted_metric, attribution - corrupted_metric)
    ratio = timed(lambda: activation_patching(model, clean, corrupted, metric, **kwargs)) / timed(
        lambda: attribution_patching(model, clean, corrupted, metric, **kwargs)
    )
    error = (attribution - activation).abs().max().item()
    print(
        f"\n{point} per_position={per_position} {list(activation.shape)}: Spearman rho {rho:.3f}; "
        f"max |attribution - activation| {error:.3f}; time activation / attribution {ratio:.1f}x"
    )
    assert torch.isfinite(torch.tensor(rho))
