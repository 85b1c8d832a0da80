"""minigpt2/interp/attribution.py: LayerNorm scales, heads' results, gradients, the residual stream taken apart, direct
logit attribution."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel

from minigpt2 import GPT2
from minigpt2.interp.attribution import accumulated_resid, apply_ln, decompose_resid, direct_logit_attribution


@pytest.fixture(scope="module")
def attributed(tiny):
    """(the session-wide tiny model, its tokenizer, two prompts cut to the same length)."""
    model, tokenizer = tiny
    rows = [tokenizer.encode("Once upon a time, there was"), tokenizer.encode("The quick brown fox jumps over")]
    n = min(len(row) for row in rows)
    return model, tokenizer, torch.tensor([row[:n] for row in rows])


def test_layer_norm_scales_and_head_results_are_there_only_when_asked(attributed):
    model, _, ids = attributed
    plain = model(ids)
    names = [
        "blocks.1.ln1.hook_scale",
        "blocks.1.hook_resid_pre",
        "blocks.1.attn.hook_result",
        "blocks.1.hook_attn_out",
    ]
    names += ["ln_final.hook_scale", "blocks.1.hook_resid_post"]
    logits, acts = model.run_with_cache(ids, names)
    resid = acts["blocks.1.hook_resid_pre"]
    expected_scale = (resid.var(dim=-1, unbiased=False, keepdim=True) + model.config.layer_norm_epsilon).sqrt()
    torch.testing.assert_close(acts["blocks.1.ln1.hook_scale"], expected_scale, rtol=0, atol=1e-6)
    assert acts["ln_final.hook_scale"].shape == (*ids.shape, 1)
    # Per-head results summed over heads, plus the output bias, are the attention output.
    result = acts["blocks.1.attn.hook_result"]  # [B, T, H, C]
    assert result.shape == (*ids.shape, model.config.n_head, model.config.n_embd)
    _, ordinary = model.run_with_cache(ids, ["blocks.1.hook_attn_out"])
    summed = result.sum(dim=2) + model.h[1].attn.c_proj.bias
    torch.testing.assert_close(summed, ordinary["blocks.1.hook_attn_out"], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, plain, rtol=0, atol=1e-5)


def test_a_frozen_layer_norm_scale_is_the_one_used(attributed):
    model, _, ids = attributed
    _, acts = model.run_with_cache(ids, ["ln_final.hook_scale"])
    doubled = model(ids, hooks={"ln_final.hook_scale": lambda scale: 2 * scale})
    _, normalized = model.run_with_cache(ids, ["ln_final.hook_normalized", "blocks.1.hook_resid_post"])
    resid = normalized["blocks.1.hook_resid_post"]
    centred = resid - resid.mean(dim=-1, keepdim=True)
    by_hand = model.unembed(centred / (2 * acts["ln_final.hook_scale"]) * model.ln_f.weight + model.ln_f.bias)
    torch.testing.assert_close(doubled, by_hand, rtol=0, atol=1e-5)


def test_decompose_resid_sums_to_the_final_layer_norms_input(attributed):
    model, _, ids = attributed
    _, acts = model.run_with_cache(ids, ["blocks.1.hook_resid_post"])
    for heads in (False, True):
        parts = decompose_resid(model, ids, heads=heads)
        assert len(parts.labels) == parts.stack.size(0) == (2 + 2 * 2 if not heads else 2 + 2 * (4 + 2))
        torch.testing.assert_close(parts.stack.sum(dim=0), acts["blocks.1.hook_resid_post"], rtol=0, atol=1e-5)
    labels, stream = accumulated_resid(model, ids)
    assert labels == ["L0 resid_pre", "L1 resid_pre", "final resid_post"]
    torch.testing.assert_close(stream[-1], acts["blocks.1.hook_resid_post"], rtol=0, atol=0)


@pytest.mark.parametrize("heads", [False, True])
def test_direct_logit_attribution_adds_up_to_the_logit_difference(attributed, heads):
    model, tokenizer, ids = attributed
    token, other = 100, 200
    attribution = direct_logit_attribution(model, ids, token, other, heads=heads)
    total = attribution.contributions.sum(dim=0) + attribution.bias
    print(f"\nDLA (heads={heads}): reconstructs the logit difference to {(total - attribution.logit).abs().max():.1e}")
    torch.testing.assert_close(total, attribution.logit, rtol=0, atol=1e-4)
    assert attribution.contributions.abs().max() > 1e-2  # not a trivial zero
    one = direct_logit_attribution(model, ids, token)
    torch.testing.assert_close(one.contributions.sum(dim=0) + one.bias, one.logit, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="is text: pass tokenizer="):
        direct_logit_attribution(model, ids, "hello")
    assert apply_ln(model, torch.zeros(3, *ids.shape, model.config.n_embd), torch.ones(*ids.shape, 1)).abs().max() == 0


def metric(logits):
    return logits[0, -1, 100] - logits[0, -1, 200]


def test_gradients_match_a_finite_difference(tiny_checkpoint):
    model = GPT2.from_pretrained(tiny_checkpoint, dtype=torch.float64)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    name = "blocks.1.hook_resid_pre"
    logits, cache = model.run_with_cache(ids, [name], grad_of=metric)
    torch.testing.assert_close(logits, model(ids).detach(), rtol=0, atol=1e-12)  # the same forward pass
    grad = cache[name + "_grad"]
    eps = 1e-6
    for position, channel in [(5, 3), (2, 10), (0, 0)]:

        def nudged(delta, position=position, channel=channel):
            def add(x):
                x = x.clone()
                x[0, position, channel] += delta
                return x

            with torch.no_grad():
                return metric(model(ids, hooks={name: add})).item()

        finite = (nudged(eps) - nudged(-eps)) / (2 * eps)
        assert abs(finite - grad[0, position, channel].item()) < 1e-6
    assert model.wte.weight.grad is None  # parameters' gradients are left alone


def test_gradients_match_transformers_at_the_same_tensors(tiny_checkpoint, tiny):
    ours, _ = tiny
    theirs = GPT2LMHeadModel.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    names = [f"blocks.{i}.hook_resid_pre" for i in range(2)] + [f"blocks.{i}.attn.hook_pattern" for i in range(2)]
    _, cache = ours.run_with_cache(ids, names, grad_of=metric)
    out = theirs(ids, output_hidden_states=True, output_attentions=True)
    tensors = [*out.hidden_states[:2], *out.attentions]  # the stream into each block; each attention pattern
    their_grads = torch.autograd.grad(metric(out.logits), tensors)
    worst = 0.0
    for name, grad in zip(names, their_grads, strict=True):
        torch.testing.assert_close(cache[name + "_grad"], grad, rtol=0, atol=1e-5)
        worst = max(worst, (cache[name + "_grad"] - grad).abs().max().item())
    print(f"\ngradients vs transformers: max difference {worst:.1e}")


def test_the_forward_pass_for_gradients_is_the_ordinary_one(attributed):
    model, _, ids = attributed
    names = lambda name: name.endswith(("hook_resid_pre", "hook_pattern", "hook_scale"))  # noqa: E731
    logits, cache = model.run_with_cache(ids, names, grad_of=metric)
    plain_logits, plain = model.run_with_cache(ids, names)
    assert (logits - plain_logits).abs().max() <= 1e-6
    assert all((cache[name] - plain[name]).abs().max() <= 1e-6 for name in plain)


def test_backward_hooks_see_and_can_change_the_gradient(attributed):
    model, _, ids = attributed
    seen = {}

    def record(grad):
        seen["grad"] = grad

    name = "blocks.1.hook_resid_mid"
    _, cache = model.run_with_cache(
        ids, ["blocks.0.hook_resid_post", name], grad_of=lambda logits: logits[0, -1, 5], backward_hooks={name: record}
    )
    torch.testing.assert_close(seen["grad"], cache[name + "_grad"], rtol=0, atol=0)
    _, zeroed = model.run_with_cache(
        ids,
        ["blocks.0.hook_resid_post"],
        grad_of=lambda logits: logits[0, -1, 5],
        backward_hooks={"blocks.1.hook_resid_mid": torch.zeros_like},
    )
    assert zeroed["blocks.0.hook_resid_post_grad"].abs().max() == 0  # everything flows through resid_mid
    with pytest.raises(ValueError, match="give grad_of= as well"):
        model.run_with_cache(ids, [name], backward_hooks={name: record})
