"""minigpt2/model.py: the forward pass. Logits and greedy tokens against transformers' GPT2LMHeadModel
loaded from the same files, every config variant GPT-2 has, shapes and refusals, and the presets."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import LOGIT_TOLERANCE, RANDOM_CONFIG, TINY_INIT, random_prompt
from transformers import GPT2LMHeadModel

from minigpt2 import GPT2, PRESETS, GPT2Config
from minigpt2.nonlinearities import NONLINEARITIES
from minigpt2.testing.checkpoints import write_checkpoint

NEW_TOKENS = 40


def load_both(path):
    return GPT2.from_pretrained(path), GPT2LMHeadModel.from_pretrained(path).eval()


def max_logit_difference(ours, reference, input_ids) -> float:
    with torch.no_grad():
        return (ours(input_ids) - reference(input_ids).logits).abs().max().item()


def reference_greedy(reference, input_ids, eos_token_id, new_tokens=NEW_TOKENS):
    return reference.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )


# ---- against transformers ----


@pytest.mark.parametrize("layout", ["tiny_checkpoint", "tiny_saved_checkpoint"])
def test_logits_match_transformers_tiny(layout, request):
    ours, reference = load_both(request.getfixturevalue(layout))
    input_ids = torch.randint(0, ours.config.vocab_size, (3, 50), generator=torch.Generator().manual_seed(0))
    diff = max_logit_difference(ours, reference, input_ids)
    print(f"\n{layout}: max abs logit difference {diff:.3e} (tolerance {LOGIT_TOLERANCE:.0e})")
    assert diff <= LOGIT_TOLERANCE


# Variants that compute what GPT-2's defaults compute: the tanh GELU written other ways, and the fp32
# upcast, which changes nothing when the weights are fp32 already.
SAME_AS_DEFAULT = {"gelu_pytorch_tanh", "gelu_python_tanh", "gelu_fast", "gelu_accurate", "reorder_and_upcast_attn"}


@pytest.mark.parametrize(
    "variant",
    [
        {"n_inner": 100, "layer_norm_epsilon": 1e-6, "n_positions": 64},
        {"activation_function": "gelu_pytorch_tanh", "n_layer": 3, "n_head": 8},
        {"activation_function": "gelu", "vocab_size": 321},
        {"n_positions": 77, "vocab_size": 50304 // 64},
        {"tie_word_embeddings": False},
        {"scale_attn_by_inverse_layer_idx": True, "n_layer": 4},
        {"scale_attn_weights": False},
        {"reorder_and_upcast_attn": True},
        *({"activation_function": name} for name in NONLINEARITIES if name != "gelu_new"),
    ],
    ids=lambda v: ",".join(f"{k}={v}" for k, v in v.items()),
)
def test_config_variants_match_transformers(variant, tmp_path):
    """Any GPT2LMHeadModel checkpoint builds from its own config.json, not only the official shapes,
    and computes each variant transformers' GPT-2 computes."""
    ours, reference = load_both(
        write_checkpoint(tmp_path, shape="tiny", seed=5, initializer_range=TINY_INIT, **variant)
    )
    input_ids = torch.randint(0, ours.config.vocab_size, (2, 30), generator=torch.Generator().manual_seed(0))
    diff = max_logit_difference(ours, reference, input_ids)
    # The same weights computed as plain GPT-2: the variant must move the logits well past the tolerance.
    plain = GPT2(replace(ours.config, **{k: getattr(GPT2Config(), k) for k in variant if k in VARIANT_FIELDS}))
    plain.load_state_dict(ours.state_dict(), strict=False)
    with torch.no_grad():
        moved = (plain(input_ids) - ours(input_ids)).abs().max().item()
    print(f"\n{variant}: max abs logit difference {diff:.3e}; the variant moves the logits by {moved:.3e}")
    assert diff <= LOGIT_TOLERANCE
    if not SAME_AS_DEFAULT & {*variant, *variant.values()} and set(variant) & VARIANT_FIELDS:
        assert moved > 10 * LOGIT_TOLERANCE


VARIANT_FIELDS = {
    "activation_function",
    "tie_word_embeddings",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
}


def test_reorder_and_upcast_attn_computes_attention_in_fp32_under_bf16(tmp_path):
    path = write_checkpoint(tmp_path, shape="tiny", seed=5, initializer_range=TINY_INIT, reorder_and_upcast_attn=True)
    ours = GPT2.from_pretrained(path, dtype=torch.bfloat16)
    # transformers applies the option in its eager attention only; its default (sdpa) ignores it.
    reference = GPT2LMHeadModel.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="eager").eval()
    input_ids = torch.randint(0, ours.config.vocab_size, (2, 30), generator=torch.Generator().manual_seed(0))
    logits, acts = ours.run_with_cache(input_ids, names=["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_z"])
    assert acts["blocks.0.attn.hook_attn_scores"].dtype == torch.float32  # scores and softmax in fp32
    assert acts["blocks.0.attn.hook_z"].dtype == torch.bfloat16  # the rest in the weights' dtype
    with torch.no_grad():
        theirs = reference(input_ids).logits.float()
    relative = (logits.float() - theirs).abs().max().item() / theirs.abs().max().item()
    print(f"\nbf16 with reorder_and_upcast_attn vs transformers (eager): {relative:.2%} of the largest logit")
    assert relative < 0.03


def test_a_subtle_mistake_shows_far_above_the_tolerance(tiny_checkpoint, reference):
    """The parity tests can fail: exact GELU in place of the tanh approximation is caught."""
    ours = GPT2.from_pretrained(tiny_checkpoint)  # its own model: the mistake is written into it
    for block in ours.h:
        block.mlp.act = torch.nn.functional.gelu
    input_ids = torch.randint(0, ours.config.vocab_size, (3, 50), generator=torch.Generator().manual_seed(0))
    diff = max_logit_difference(ours, reference, input_ids)
    print(f"\nexact GELU instead of tanh: max abs logit difference {diff:.3e}")
    assert diff > 10 * LOGIT_TOLERANCE


def test_greedy_matches_transformers_tiny(tiny, reference):
    ours, _ = tiny
    eos = ours.config.eos_token_id
    input_ids = torch.randint(0, eos, (4, 7), generator=torch.Generator().manual_seed(1))
    expected = reference_greedy(reference, input_ids, eos)
    for use_cache in (True, False):
        got = ours.generate(input_ids, max_new_tokens=NEW_TOKENS, eos_token_id=eos, use_cache=use_cache)
        assert got.tolist() == expected.tolist(), f"use_cache={use_cache}"


@pytest.mark.slow
def test_gpt2_medium_shape_logits_and_greedy(medium):
    ours, reference = medium
    assert (ours.config.n_layer, ours.config.n_embd, ours.config.n_head, ours.config.n_positions) == (
        24,
        1024,
        16,
        1024,
    )
    input_ids = torch.randint(0, 50257, (1, 64), generator=torch.Generator().manual_seed(2))
    diff = max_logit_difference(ours, reference, input_ids)
    print(f"\ngpt2-medium shape: max abs logit difference {diff:.3e} (tolerance {LOGIT_TOLERANCE:.0e})")
    assert diff <= LOGIT_TOLERANCE

    prompt, new_tokens = input_ids[:, :8], 20  # the tiny shapes' tests run 40 tokens; here each costs more
    expected = reference_greedy(reference, prompt, eos_token_id=50256, new_tokens=new_tokens)
    cached = ours.generate(prompt, max_new_tokens=new_tokens, eos_token_id=50256)
    plain = ours.generate(prompt, max_new_tokens=new_tokens, eos_token_id=50256, use_cache=False)
    assert cached.tolist() == expected.tolist()
    assert plain.tolist() == cached.tolist()
    assert cached.size(1) == prompt.size(1) + new_tokens  # no eos: every token was compared


# ---- on its own: a random model, no files ----


def test_logits_shape_and_next_token(random_model):
    model = random_model
    ids = random_prompt()
    logits = model(ids)
    assert logits.shape == (2, 5, RANDOM_CONFIG.vocab_size)  # [batch, tokens, vocabulary]
    next_token = logits[0, -1].argmax()
    assert model.generate(ids[:1], max_new_tokens=1)[0, -1] == next_token


def test_forward_refuses_more_than_the_context_or_the_cache(random_model):
    model = random_model
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, 33, dtype=torch.long))
    cache = model.new_cache(batch_size=1, max_len=4)
    model(torch.zeros(1, 3, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="does not fit the cache"):
        model(torch.zeros(1, 2, dtype=torch.long), cache)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_have_the_official_shapes(name):
    config = GPT2Config.preset(name)
    official = {
        "distilgpt2": (6, 768),
        "gpt2": (12, 768),
        "gpt2-medium": (24, 1024),
        "gpt2-large": (36, 1280),
        "gpt2-xl": (48, 1600),
    }
    assert (config.n_layer, config.n_embd) == official[name]
    assert config.vocab_size == 50257 and config.n_positions == 1024 and config.head_dim == 64


def test_a_random_model_of_any_preset_builds_without_downloading():
    model = GPT2(GPT2Config.preset("gpt2", n_layer=2))
    assert model.num_params() == 50257 * 768 + 1024 * 768 + 2 * (12 * 768 * 768 + 13 * 768) + 2 * 768
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    with pytest.raises(ValueError, match="unknown preset"):
        GPT2Config.preset("gpt3")


def test_the_front_doors_are_the_classs_own_methods():
    """GPT2's front doors come from the wings' mixins, in the class itself (help(GPT2), an editor), never bound
    at run time: each is defined in its wing's module."""
    import inspect

    where = {
        "from_pretrained": "minigpt2/loading/pretrained.py",
        "generate": "minigpt2/generation/loop.py",
        "stream": "minigpt2/generation/loop.py",
        "run_with_cache": "minigpt2/interp/internals.py",
        "attention_patterns": "minigpt2/interp/internals.py",
        "logit_lens": "minigpt2/interp/internals.py",
        "score": "minigpt2/scoring.py",
    }
    for name, path in where.items():
        method = inspect.getattr_static(GPT2, name)
        owner = next(klass for klass in GPT2.__mro__ if name in vars(klass))
        assert owner is not GPT2 and owner.__module__.startswith("minigpt2."), name
        assert inspect.getsourcefile(inspect.unwrap(getattr(GPT2, name))).endswith(path), name
        assert getattr(method, "__doc__", None) or getattr(method, "__func__", method).__doc__, name
