"""minigpt2/interp/internals.py (and hooks.py): named activations, interventions, attention patterns and the logit lens,
checked against transformers; and the notebook that walks through them, run end to end."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import LOGIT_TOLERANCE, ROOT
from transformers import GPT2LMHeadModel


@pytest.fixture(scope="module")
def model(tiny):
    """The session-wide tiny model."""
    return tiny[0]


@pytest.fixture(scope="module")
def ids(model):
    return torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))


def test_activations_match_transformers_hidden_states_and_attentions(tiny_checkpoint, model, ids):
    reference = GPT2LMHeadModel.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = reference(ids, output_hidden_states=True, output_attentions=True)
    logits, acts = model.run_with_cache(ids)
    L = model.config.n_layer
    # transformers' hidden_states: the stream into each block, then the final LayerNorm's output.
    ours_hidden = [acts[f"blocks.{i}.hook_resid_pre"] for i in range(L)] + [acts["ln_final.hook_normalized"]]
    differences = {
        "logits": (logits - theirs.logits).abs().max().item(),
        "hidden_states": max(
            (a - b).abs().max().item() for a, b in zip(ours_hidden, theirs.hidden_states, strict=True)
        ),
        "attentions": max(
            (acts[f"blocks.{i}.attn.hook_pattern"] - theirs.attentions[i]).abs().max().item() for i in range(L)
        ),
    }
    print(f"\nmax abs differences against transformers: {differences}")
    assert all(d <= LOGIT_TOLERANCE for d in differences.values())


def test_every_name_is_captured_in_forward_order_with_its_shape(model, ids):
    logits, acts = model.run_with_cache(ids)
    assert list(acts) == model.hook_names()
    B, T = ids.shape
    C, H, D = model.config.n_embd, model.config.n_head, model.config.head_dim
    shapes = {
        "hook_embed": (B, T, C),
        "blocks.1.hook_resid_pre": (B, T, C),
        "blocks.1.attn.hook_q": (B, T, H, D),
        "blocks.1.attn.hook_pattern": (B, H, T, T),
        "blocks.1.attn.hook_z": (B, T, H, D),
        "blocks.1.mlp.hook_post": (B, T, model.config.mlp_width),
        "ln_final.hook_normalized": (B, T, C),
    }
    assert {name: tuple(acts[name].shape) for name in shapes} == shapes
    torch.testing.assert_close(acts["hook_embed"] + acts["hook_pos_embed"], acts["blocks.0.hook_resid_pre"])


def test_last_residual_through_final_norm_and_unembedding_is_the_logits(model, ids):
    logits, acts = model.run_with_cache(ids, names=[f"blocks.{model.config.n_layer - 1}.hook_resid_post"])
    residual = acts[f"blocks.{model.config.n_layer - 1}.hook_resid_post"]
    with torch.no_grad():
        unembedded = F.linear(model.ln_f(residual), model.wte.weight)
    torch.testing.assert_close(unembedded, logits, rtol=0, atol=1e-5)
    lens = model.logit_lens(ids)
    assert lens.shape == (model.config.n_layer, *logits.shape)
    torch.testing.assert_close(lens[-1], logits.softmax(dim=-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(lens.sum(dim=-1), torch.ones(lens.shape[:-1]))


def test_attention_patterns_are_causal_distributions(model, ids):
    patterns = model.attention_patterns(ids)  # [L, B, H, query, key]
    assert patterns.shape == (model.config.n_layer, 2, model.config.n_head, 24, 24)
    torch.testing.assert_close(patterns.sum(dim=-1), torch.ones(patterns.shape[:-1]))
    assert (patterns.triu(diagonal=1) == 0).all()  # no query attends to a later key


def test_filter_keeps_only_what_was_asked_and_costs_nothing_otherwise(model, ids, monkeypatch):
    plain = model(ids)
    _, acts = model.run_with_cache(ids, names=lambda name: name.endswith("hook_resid_post"))
    assert list(acts) == [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layer)]
    _, one = model.run_with_cache(ids, names="blocks.0.attn.hook_pattern")
    assert list(one) == ["blocks.0.attn.hook_pattern"]

    # Without a pattern hook, attention runs as scaled_dot_product_attention and never writes the pattern out.
    def fail(*args):
        raise AssertionError("attention was written out although no pattern was asked for")

    monkeypatch.setattr(type(model.h[0].attn), "_attention_written_out", fail)
    logits, _ = model.run_with_cache(ids, names=lambda name: "resid" in name)
    assert torch.equal(logits, plain)  # recording changes nothing
    with pytest.raises(ValueError, match="no activation named 'blocks.0.hook_resid_pree'"):
        model.run_with_cache(ids, names=["blocks.0.hook_resid_pree"])
    with pytest.raises(ValueError, match="no activation named"):
        model(ids, hooks={"blocks.9.hook_resid_pre": print})


def test_zeroing_one_head_changes_what_it_should_and_nothing_else(model, ids):
    layer, head, D = 1, 2, model.config.head_dim

    def zero_head(z):  # [B, T, H, D]
        z = z.clone()
        z[:, :, head] = 0
        return z

    watched = ["blocks.1.hook_resid_pre", "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z"]
    _, before = model.run_with_cache(ids, names=watched)
    after_logits, after = model.run_with_cache(ids, names=watched, hooks={f"blocks.{layer}.attn.hook_z": zero_head})
    assert torch.equal(after["blocks.1.hook_resid_pre"], before["blocks.1.hook_resid_pre"])  # upstream: untouched
    assert torch.equal(after["blocks.1.attn.hook_pattern"], before["blocks.1.attn.hook_pattern"])
    others = [h for h in range(model.config.n_head) if h != head]
    assert torch.equal(after["blocks.1.attn.hook_z"][:, :, others], before["blocks.1.attn.hook_z"][:, :, others])
    assert (after["blocks.1.attn.hook_z"][:, :, head] == 0).all()

    # The same model with that head's slice of the output projection removed gives the same logits.
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        pruned.h[layer].attn.c_proj.weight[:, head * D : (head + 1) * D] = 0
    torch.testing.assert_close(after_logits, pruned(ids), rtol=0, atol=1e-5)
    assert (after_logits - model(ids)).abs().max() > 1e-2  # and it did change the output


def test_notebook_runs_end_to_end(tiny_checkpoint, monkeypatch, tmp_path):
    """Every code cell of the notebook, in order, in one namespace, on the tiny checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("MINIGPT2_MODEL", str(tiny_checkpoint))
    monkeypatch.chdir(tmp_path)
    notebook = json.loads((ROOT / "notebooks" / "inside_gpt2.ipynb").read_text())
    namespace: dict = {}
    cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert len(cells) >= 8
    for n, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"<notebook cell {n}>", "exec"), namespace)
