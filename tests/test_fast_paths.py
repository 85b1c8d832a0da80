"""The fast paths compute what the plain ones compute: oneDNN's matrix products next to F.linear,
the static decode step (eager and compiled) next to the ordinary cached forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import LOGIT_TOLERANCE

from minigpt2 import GPT2, Tokenizer
from minigpt2.generation.compiled import decode_step
from minigpt2.kernels import OneDNNLinear, _suits_onednn

PROMPTS = ["Once upon a time", "Hi", "안녕하세요 👋"]


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return GPT2.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)


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


def test_weights_converted_on_load_are_in_nn_linear_order(tiny_checkpoint):
    """A conversion copies anyway; it writes [out, in] in order, which torch's bf16 kernels read fastest.
    fp32 is not copied: its projections stay transposed views of the file."""
    bf16 = GPT2.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    fp32 = GPT2.from_pretrained(tiny_checkpoint)
    assert bf16.h[0].mlp.c_fc.weight.is_contiguous() and not fp32.h[0].mlp.c_fc.weight.is_contiguous()
    assert torch.equal(bf16.h[0].mlp.c_fc.weight, fp32.h[0].mlp.c_fc.weight.bfloat16())


def test_decode_step_equals_the_cached_forward(tiny):
    """The static step (whole cache read, slots hidden by the mask) gives the logits the sliced cache gives."""
    model, tokenizer = tiny
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    B, T = input_ids.shape
    sliced, static = model.new_cache(B, T + 1), model.new_cache(B, model.config.n_positions)
    next_ids = torch.tensor([[5], [6], [7]])
    with_next = F.pad(attention_mask, (0, 1), value=1)  # [B, T + 1]: the prompt's mask, then the new token
    with torch.inference_mode():
        model(input_ids, sliced, attention_mask=attention_mask)
        model(input_ids, static, attention_mask=attention_mask)
        expected = model(next_ids, sliced, attention_mask=with_next)[:, -1]
        visible = torch.zeros(B, static.max_len, dtype=torch.bool)
        visible[:, : T + 1] = with_next.bool()
        logits = decode_step(model, next_ids, static, torch.tensor([T]), visible)
    diff = (logits - expected).abs().max().item()
    print(f"\ndecode_step vs cached forward: max abs logit difference {diff:.1e}")
    assert diff <= LOGIT_TOLERANCE
    torch.testing.assert_close(static.keys[:, :, :, : T + 1], sliced.keys)  # written in the same slots
    assert not static.keys[:, :, :, T + 1 :].any()


@pytest.mark.slow
def test_compiled_generation_gives_the_plain_loops_tokens(tiny):
    """torch.compile on the CPU (inductor; on a GPU the same step also gets CUDA graphs: test_cuda.py)."""
    model, tokenizer = tiny
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    options = dict(attention_mask=attention_mask, max_new_tokens=25, eos_token_id=tokenizer.eos_token_id)
    plain = model.generate(input_ids, use_cache=False, **options)
    assert torch.equal(model.generate(input_ids, compile=True, **options), plain)
    options["max_new_tokens"] = 10  # another length reuses the compiled step: the cache spans the context
    assert torch.equal(model.generate(input_ids, compile=True, **options), model.generate(input_ids, **options))
    with pytest.raises(ValueError, match="needs use_cache=True"):
        model.generate(input_ids, compile=True, use_cache=False, **options)
