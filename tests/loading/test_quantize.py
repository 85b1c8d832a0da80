"""minigpt2/loading/quantize.py: opt-in int8 weights. The quantization itself, the product the kernel computes, what it
costs in accuracy and memory, and the hooks and the explorer on an int8 model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import run_python

from minigpt2 import GPT2
from minigpt2.loading.quantize import Int8Linear, quantize_rows


def test_per_channel_symmetric_int8_round_trip():
    torch.manual_seed(0)
    weight = torch.randn(3000, 96) * torch.rand(3000, 1)  # rows of very different sizes
    weight[7] = 0  # a row of zeros must not divide by zero
    q, scales = quantize_rows(weight)
    assert q.dtype == torch.int8 and q.shape == weight.shape and int(q.abs().max()) == 127
    assert torch.equal(scales, (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny))
    dequantized = q.float() * scales[:, None]
    error = (dequantized - weight).abs()
    assert (error <= scales[:, None] / 2 + 1e-7).all()  # each weight within half a step of its row
    assert dequantized[7].abs().max() == 0


def int8_linear(weight, bias):
    module = Int8Linear(weight.size(1), weight.size(0))
    module.qweight.data, module.scales = quantize_rows(weight)
    module.bias.data = bias
    return module


def test_an_int8_linear_is_a_module_that_moves_saves_and_counts_its_weights():
    torch.manual_seed(2)
    q = int8_linear(torch.randn(64, 32), torch.randn(64))
    assert set(q.state_dict()) == {"qweight", "scales", "bias"}
    assert sum(p.numel() for p in q.parameters()) == 64 * 32 + 64  # the int8 rows and the bias
    assert q.to("meta").qweight.is_meta and q.scales.is_meta  # .to() moves the weight and its scales


def test_the_int8_product_is_bf16_activations_times_int8_rows_then_the_scales():
    torch.manual_seed(1)
    weight, bias, x = torch.randn(256, 128) * 0.05, torch.randn(256), torch.randn(2, 5, 128)
    q = int8_linear(weight, bias)
    with torch.no_grad():
        got = q(x)
    exact = F.linear(x.bfloat16().float(), q.qweight.float()).bfloat16().float() * q.scales + bias
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-5)
    relative = ((got - F.linear(x, weight, bias)).abs().max() / F.linear(x, weight, bias).abs().max()).item()
    print(f"\none int8 product against fp32: {relative:.2%} of the largest output")
    assert relative < 0.02


def test_an_int8_model_stays_close_to_fp32(tiny_checkpoint, tiny):
    (fp32, tokenizer), int8 = tiny, GPT2.from_pretrained(tiny_checkpoint, quantize="int8")
    assert isinstance(int8.h[0].mlp.c_fc, Int8Linear) and isinstance(int8.lm_head, Int8Linear)
    assert int8.num_params() == fp32.num_params()
    ids = torch.tensor([tokenizer.encode("Once upon a time, there was a little girl who lived in a village")])
    with torch.no_grad():
        exact, approx = fp32(ids), int8(ids)
    relative = ((approx - exact).abs().max() / (exact.max() - exact.min())).item()
    top1 = (approx.argmax(-1) == exact.argmax(-1)).float().mean().item()
    print(f"\nint8 vs fp32 on the tiny model: {relative:.2%} of the logit range, top-1 agreement {top1:.0%}")
    assert relative < 0.05 and top1 >= 0.85
    assert int8.generate(ids, max_new_tokens=5).shape == (1, ids.size(1) + 5)
    with pytest.raises(ValueError, match="quantize must be one of int8"):
        GPT2.from_pretrained(tiny_checkpoint, quantize="int4")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_int8_weights_with_half_precision_activations(tiny_checkpoint, tiny, dtype):
    """quantize="int8" with dtype=bfloat16 (or float16): the head tied to the embedding is quantized from the
    half-precision wte, and the logits stay as close to fp32's as int8 alone is (bounded as above)."""
    (fp32, tokenizer), int8 = tiny, GPT2.from_pretrained(tiny_checkpoint, quantize="int8", dtype=dtype)
    assert int8.wte.weight.dtype == dtype and int8.lm_head.qweight.dtype == torch.int8
    ids = torch.tensor([tokenizer.encode("Once upon a time, there was a little girl who lived in a village")])
    with torch.no_grad():
        exact, approx = fp32(ids), int8(ids).float()
    relative = ((approx - exact).abs().max() / (exact.max() - exact.min())).item()
    print(f"\nint8 weights, {dtype} activations vs fp32: {relative:.2%} of the logit range")
    assert relative < 0.05
    assert int8.generate(ids, max_new_tokens=5).shape == (1, ids.size(1) + 5)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from Linux's /proc")
def test_loading_int8_holds_the_int8_weights_and_the_embedding_not_the_fp32_model(medium_checkpoint, medium):
    code = f"""
import re, torch, minigpt2
peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
before = peak()
model = minigpt2.GPT2.from_pretrained({str(medium_checkpoint)!r}, quantize="int8")
with torch.no_grad():
    model(torch.tensor([[1, 2, 3]]))
growth = peak() - before
print(growth, sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]))
"""
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    growth, kept = (int(n) for n in result.stdout.split()[-2:])  # kept: what the int8 model holds
    fp32_sizes = [p.numel() * 4 for p in medium[0].parameters()]
    largest, fp32 = max(fp32_sizes), sum(fp32_sizes)  # the largest: the token embedding, kept for lookups
    print(
        f"\nint8 load + forward: peak growth {growth / 2**30:.2f} GiB; kept: int8 weights + the fp32 rest "
        f"{kept / 2**30:.2f} GiB, + one fp32 tensor while read {(kept + largest) / 2**30:.2f} GiB; "
        f"the fp32 model {fp32 / 2**30:.2f} GiB"
    )
    assert growth <= 1.1 * (kept + largest) and kept + largest < 0.6 * fp32


def test_heads_results_and_the_explorer_on_an_int8_model(tiny_checkpoint, tiny):
    """hook_result reads c_proj's weight per head: an int8 one is dequantized, so the heads still add up."""
    from minigpt2.explore import explore

    int8, (_, tokenizer) = GPT2.from_pretrained(tiny_checkpoint, quantize="int8"), tiny
    ids = torch.tensor([tokenizer.encode("Once upon a time")])
    _, acts = int8.run_with_cache(ids, ["blocks.0.attn.hook_result", "blocks.0.hook_attn_out"])
    summed = acts["blocks.0.attn.hook_result"].sum(dim=2) + int8.h[0].attn.c_proj.bias
    torch.testing.assert_close(summed, acts["blocks.0.hook_attn_out"], rtol=0, atol=1e-5)
    page = explore(int8, tokenizer, "Once upon a time", max_new_tokens=3)
    assert page.steps == 3 and page.attribution.abs().max() > 0
