"""minigpt2/loading/kernels.py: oneDNN's matrix products (fast=True) compute what F.linear computes, pick the same
greedy tokens, keep gradients, and are used only for the [out, in] layout fast=True lays fp32 weights out in."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import LOGIT_TOLERANCE

from minigpt2 import GPT2
from minigpt2.loading.kernels import OneDNNLinear, _suits_onednn

PROMPTS = ["Once upon a time", "Hi", "안녕하세요 👋"]


@pytest.mark.parametrize("rows", [1, 4, 16, 300])
@pytest.mark.parametrize("layout", ["[out, in]", "[in, out] transposed"])
def test_onednn_linear_is_f_linear_where_onednn_does_not_suit(rows, layout):
    g = torch.Generator().manual_seed(rows)
    weight = torch.randn(384, 256, generator=g) / 16  # [out, in]
    if layout != "[out, in]":
        weight = weight.t().contiguous().t()  # the view a loaded fp32 checkpoint has
    bias, x = torch.randn(384, generator=g), torch.randn(1, rows, 256, generator=g)
    module = OneDNNLinear(256, 384)
    module.weight.data, module.bias.data = weight, bias
    with torch.inference_mode():
        reference = F.linear(x, weight, bias)
        fast = module(x)
        if not _suits_onednn(x, weight, bias):  # a prompt's rows, or a transposed view: transformers' kernel
            assert torch.equal(fast, reference)
    diff = (fast - reference).abs().max().item()
    print(f"\n{rows} rows, weight {layout}: oneDNN's max abs difference from F.linear {diff:.1e}")
    assert fast.shape == reference.shape and diff <= 1e-5


def test_onednn_picks_the_same_greedy_tokens_and_keeps_gradients(tiny_checkpoint, tiny):
    default, tokenizer = tiny
    model = GPT2.from_pretrained(tiny_checkpoint, fast=True)  # oneDNN, and the layout it is used for
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    options = dict(attention_mask=attention_mask, max_new_tokens=25, eos_token_id=tokenizer.eos_token_id)
    plain = default.generate(input_ids, use_cache=False, **options)
    assert torch.equal(model.generate(input_ids, **options), plain)
    model(input_ids)[0, -1].logsumexp(-1).backward()  # oneDNN has no backward: F.linear takes over
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)


def test_fast_lays_fp32_out_for_onednn(tiny_checkpoint, tiny):
    """fast=True copies fp32 projections to [out, in] in order, the layout oneDNN is used for; a
    transposed view (the zero-copy default) stays with F.linear, which reads it faster."""
    default, tokenizer = tiny
    laid_out = GPT2.from_pretrained(tiny_checkpoint, fast=True)
    assert isinstance(laid_out.h[1].mlp.c_proj, OneDNNLinear) and type(default.h[1].mlp.c_proj) is torch.nn.Linear
    weight, view = laid_out.h[1].mlp.c_proj.weight, default.h[1].mlp.c_proj.weight
    assert weight.is_contiguous() and not view.is_contiguous() and torch.equal(weight, view)
    x = torch.randn(1, 1, weight.size(1))
    with torch.inference_mode():
        assert _suits_onednn(x, weight, None) and not _suits_onednn(x, view, None)
        ids = torch.tensor([tokenizer.encode(PROMPTS[0])])
        fast = laid_out(ids)
        diff = (fast - default(ids)).abs().max().item()
    print(f"\nfast=True (oneDNN) vs the default: max abs logit difference {diff:.1e}")
    assert diff <= LOGIT_TOLERANCE
