"""Hooks while generating (generate/stream(..., hooks=)): a steering vector on the residual stream and a
head ablation, cached against uncached generation and against the tutorial's loop (a whole-sequence forward
pass with the same hook, argmax, append); what a hook is told about the positions of each call."""

from __future__ import annotations

import pytest
import torch
from conftest import hooked_transformer

PROMPT = torch.tensor([[5, 17, 42, 9, 88, 3]])
NEW = 24


def steering(model, scale=4.0):
    vector = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(0)) * scale
    return {"blocks.1.hook_resid_post": lambda x: x + vector}


def head_ablation(layer=0, head=1):
    def zero(z):  # z [B, T, n_head, d_head]
        z = z.clone()
        z[:, :, head] = 0
        return z

    return {f"blocks.{layer}.attn.hook_z": zero}


def tutorial_loop(model, ids, hooks, new=NEW):
    """The classic loop: the whole sequence every step, argmax of logits[0, -1], append."""
    for _ in range(new):
        logits = model(ids, hooks=hooks)
        ids = torch.cat([ids, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("make_hooks", [steering, lambda model: head_ablation()], ids=["steering", "head ablation"])
def test_cached_uncached_and_the_tutorial_loop_agree_with_hooks(tiny, make_hooks):
    model, _ = tiny
    hooks = make_hooks(model)
    plain = model.generate(PROMPT, max_new_tokens=NEW, eos_token_id=None)
    cached = model.generate(PROMPT, max_new_tokens=NEW, eos_token_id=None, hooks=hooks)
    uncached = model.generate(PROMPT, max_new_tokens=NEW, eos_token_id=None, hooks=hooks, use_cache=False)
    by_hand = tutorial_loop(model, PROMPT, hooks)
    changed = (cached != plain).sum().item()
    print(f"the hook changed {changed} of {NEW} tokens")
    assert changed > 0, "the hook should change the greedy text, or this test shows nothing"
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, by_hand)


def test_seeded_sampling_with_hooks_is_the_same_cached_or_not(tiny):
    model, _ = tiny
    options = dict(max_new_tokens=NEW, eos_token_id=None, do_sample=True, seed=5, hooks=steering(model))
    assert torch.equal(model.generate(PROMPT, **options), model.generate(PROMPT, use_cache=False, **options))


def test_a_hook_is_told_the_positions_of_each_call(tiny):
    model, _ = tiny
    T, n = PROMPT.size(1), 4
    for use_cache in (True, False):
        seen = []
        record = lambda x, hook: seen.append((hook.start, hook.tokens, hook.new_from, x.size(1)))  # noqa: E731
        model.generate(PROMPT, max_new_tokens=n, eos_token_id=None, hooks={"hook_embed": record}, use_cache=use_cache)
        if use_cache:  # the prompt once, then one new token a step
            expected = [(0, T, T, T)] + [(T + i, 1, 0, 1) for i in range(n - 1)]
        else:  # the whole sequence every step; the new tokens start at T
            expected = [(0, T + i, T, T + i) for i in range(n)]
        assert seen == expected, (use_cache, seen)
    outside = []
    model(PROMPT, hooks={"hook_embed": lambda x, hook: outside.append(hook.new_from)})
    assert outside == [T]  # outside generation, nothing is new


def test_steering_only_the_new_tokens_is_the_same_cached_or_not(tiny):
    model, _ = tiny
    vector = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(1)) * 4

    def steer_new(x, hook):
        x = x.clone()
        x[:, hook.new_from :] += vector
        return x

    hooks = {"blocks.0.hook_resid_mid": steer_new}
    cached = model.generate(PROMPT, max_new_tokens=NEW, eos_token_id=None, hooks=hooks)
    uncached = model.generate(PROMPT, max_new_tokens=NEW, eos_token_id=None, hooks=hooks, use_cache=False)
    everywhere = model.generate(PROMPT, max_new_tokens=NEW, eos_token_id=None, hooks=steering(model))
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, everywhere)


def test_stream_runs_the_hooks_at_every_step(tiny):
    model, _ = tiny
    calls = []
    steps = list(model.stream(PROMPT, max_new_tokens=5, eos_token_id=None, hooks={"ln_final.hook_scale": calls.append}))
    assert len(steps) == 5 and len(calls) == 5


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(hooks={"blocks.99.hook_resid_pre": print}), "no activation named 'blocks.99.hook_resid_pre'"),
        (dict(hooks={"hook_embed": print}, compile=True), "hooks run in the eager forward pass"),
    ],
)
def test_bad_hooks_are_refused_before_any_work(tiny, options, message):
    model, _ = tiny
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPT, max_new_tokens=3, **options)


def test_transformer_lens_generates_the_same_tokens_with_the_same_hook(tiny, reference):
    """TransformerLens 3's HookedTransformer.generate, given the same weights and a steering hook.

    Its uncached generate is compared: on this model its KV-cached generate (use_past_kv_cache=True) departs
    from its own forward pass even with no hook at all, from the second new token on, so that is printed,
    not asserted."""
    tl = pytest.importorskip("transformer_lens", reason="TransformerLens is not installed (the test extra has it)")
    if not hasattr(tl, "HookedTransformer"):
        pytest.skip("this TransformerLens has no HookedTransformer (4.x); the test extra pins 3.x")

    model, _ = tiny
    hooked = hooked_transformer(reference)
    vector = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(0)) * 4
    name = "blocks.1.hook_resid_post"
    options = dict(max_new_tokens=NEW, do_sample=False, verbose=False, stop_at_eos=False)
    theirs = {}
    for cached in (False, True):
        with hooked.hooks(fwd_hooks=[(name, lambda x, hook: x + vector)]):
            theirs[cached] = hooked.generate(PROMPT, use_past_kv_cache=cached, **options)
    ours = model.generate(PROMPT, max_new_tokens=NEW, eos_token_id=None, hooks={name: lambda x: x + vector})
    unhooked = model.generate(PROMPT, max_new_tokens=NEW, eos_token_id=None)
    same = (ours[0] == theirs[True][0]).sum().item() - PROMPT.size(1)
    print(f"ours {ours[0, 6:].tolist()}\nTL's KV-cached generate agrees on {same} of {NEW} new tokens")
    assert torch.equal(ours, theirs[False]) and not torch.equal(ours, unhooked)
    assert torch.equal(unhooked, hooked.generate(PROMPT, use_past_kv_cache=False, **options))
