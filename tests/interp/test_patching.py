"""minigpt2/interp/patching.py (and plots.py): activation patching's identities, the same numbers as a hand-written loop
over hooks=, and the plots that label layers, heads and tokens."""

from __future__ import annotations

import pytest
import torch
from conftest import PATCHING_CLEAN

from minigpt2.interp.patching import HOOKS, activation_patching, run_patches


def by_hand(model, corrupted, clean_acts, name, metric, position=None, head=None):
    """One patched forward pass over the whole corrupted prompt, the plain way."""

    def patch(x):
        x = x.clone()
        where = slice(None) if position is None else position
        if head is None:
            x[:, where] = clean_acts[name][:, where]
        else:
            x[:, where, head] = clean_acts[name][:, where, head]
        return x

    with torch.no_grad():
        return metric(model(corrupted, hooks={name: patch})[:, -1]).item()


def test_identities(patching_case):
    model, clean, corrupted, metric = patching_case
    with torch.no_grad():
        clean_metric, corrupted_metric = metric(model(clean)[:, -1]).item(), metric(model(corrupted)[:, -1]).item()
    assert abs(clean_metric - corrupted_metric) > 0.1  # the corruption matters
    _, acts = model.run_with_cache(clean, ["blocks.0.hook_resid_pre"])
    every_position = run_patches(model, corrupted, acts, ["blocks.0.hook_resid_pre"], [(0, None, None)], metric, 8)
    print(f"\npatching all of resid_pre at layer 0: {every_position.item():.6f}; clean metric {clean_metric:.6f}")
    assert abs(every_position.item() - clean_metric) < 1e-5
    nothing = activation_patching(model, corrupted, corrupted, metric)  # "clean" activations = corrupted ones
    assert torch.allclose(nothing, torch.full_like(nothing, corrupted_metric), atol=1e-5)


@pytest.mark.parametrize("point", ["resid_pre", "attn_out", "mlp_out"])
def test_layer_by_position_sweeps_equal_a_loop_over_hooks(patching_case, point):
    model, clean, corrupted, metric = patching_case
    names = [HOOKS[point].format(layer) for layer in range(model.config.n_layer)]
    _, acts = model.run_with_cache(clean, names)
    batched = activation_patching(model, clean, corrupted, metric, point=point, batch_size=5)
    assert batched.shape == (model.config.n_layer, clean.size(1))
    for layer, name in enumerate(names):
        for position in range(clean.size(1)):
            expected = by_hand(model, corrupted, acts, name, metric, position=position)
            assert abs(batched[layer, position].item() - expected) < 1e-4, (point, layer, position)
    if point == "resid_pre":  # patching the changed token's stream at layer 0 restores the clean run
        with torch.no_grad():
            assert abs(batched[0, 2].item() - metric(model(clean)[:, -1]).item()) < 1e-4


@pytest.mark.parametrize("per_position", [False, True])
def test_head_sweeps_equal_a_loop_over_hooks(patching_case, per_position):
    model, clean, corrupted, metric = patching_case
    names = [HOOKS["z"].format(layer) for layer in range(model.config.n_layer)]
    _, acts = model.run_with_cache(clean, names)
    batched = activation_patching(model, clean, corrupted, metric, point="z", per_position=per_position)
    L, H, T = model.config.n_layer, model.config.n_head, clean.size(1)
    assert batched.shape == ((L, H, T) if per_position else (L, H))
    for layer, name in enumerate(names):
        for head in range(H):
            for position in range(T) if per_position else [None]:
                expected = by_hand(model, corrupted, acts, name, metric, position=position, head=head)
                got = batched[layer, head, position] if per_position else batched[layer, head]
                assert abs(got.item() - expected) < 1e-4


def test_bad_patching_requests(patching_case):
    model, clean, corrupted, metric = patching_case
    with pytest.raises(ValueError, match="point must be one of"):
        activation_patching(model, clean, corrupted, metric, point="pattern")
    with pytest.raises(ValueError, match="one row each of the same length"):
        activation_patching(model, clean, corrupted[:, :-1], metric)


def test_plots_label_layers_heads_and_tokens(patching_case, tiny, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from minigpt2.interp.attribution import direct_logit_attribution
    from minigpt2.interp.plots import (
        plot_attention,
        plot_attribution,
        plot_logit_lens,
        plot_patching,
        token_labels,
    )

    model, clean, corrupted, metric = patching_case
    _, tokenizer = tiny
    tokens = token_labels(tokenizer, clean[0])
    assert tokens[0] == f"0 {tokenizer.decode([PATCHING_CLEAN[0][0]])!r}"
    ax = plot_patching(activation_patching(model, clean, corrupted, metric), tokens=tokens)
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens and ax.get_ylabel() == "layer"
    ax = plot_patching(activation_patching(model, clean, corrupted, metric, point="z", per_position=False))
    assert ax.get_xlabel() == "head" and len(ax.get_xticklabels()) == model.config.n_head
    attribution = direct_logit_attribution(model, clean, 100, 200, heads=True)
    ax = plot_attribution(attribution)
    assert [t.get_text() for t in ax.get_xticklabels()] == attribution.labels and "L1H3" in attribution.labels
    ax = plot_attention(model.attention_patterns(clean)[1, 0, 2], tokens)
    assert ax.get_xlabel() == "key" and [t.get_text() for t in ax.get_yticklabels()] == tokens
    ax = plot_logit_lens(model.logit_lens(clean), tokenizer, tokens)
    assert len(ax.texts) == model.config.n_layer * clean.size(1)
    ax.figure.savefig(tmp_path / "lens.png")
    assert (tmp_path / "lens.png").stat().st_size > 1000
