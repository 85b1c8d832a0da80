"""The CUDA path: the same code on a GPU, in fp32 (same greedy tokens as the CPU) and in fp16/bf16 (opt-in, bounded).

Skipped where CUDA is not available (the CI machine); runs on any machine with a GPU.
"""

from __future__ import annotations

import pytest
import torch
from conftest import LOGIT_TOLERANCE

from minigpt2 import GPT2

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

PROMPTS = ["Once upon a time", "안녕하세요 👋", "def f(x):"]


@pytest.fixture(scope="module")
def on_cpu(tiny):
    """The session-wide tiny model and its tokenizer, on the CPU."""
    return tiny


def test_fp32_on_cuda_matches_the_cpu(tiny_checkpoint, on_cpu):
    cpu, tokenizer = on_cpu
    gpu = GPT2.from_pretrained(tiny_checkpoint, device="cuda")
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    with torch.no_grad():
        diff = gpu(input_ids.cuda(), attention_mask=attention_mask.cuda()).cpu() - cpu(
            input_ids, attention_mask=attention_mask
        )
    real = attention_mask.bool()
    print(f"\ncuda fp32 vs cpu: max abs logit difference {diff[real].abs().max():.2e}")
    assert diff[real].abs().max() <= LOGIT_TOLERANCE
    options = dict(attention_mask=attention_mask, max_new_tokens=30, eos_token_id=tokenizer.eos_token_id)
    assert torch.equal(gpu.generate(input_ids, **options).cpu(), cpu.generate(input_ids, **options))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda_stays_close(tiny_checkpoint, on_cpu, dtype):
    cpu, tokenizer = on_cpu
    gpu = GPT2.from_pretrained(tiny_checkpoint, device="cuda", dtype=dtype)
    assert gpu.new_cache(1).keys.dtype == dtype and gpu.new_cache(1).keys.is_cuda
    ids = torch.tensor([tokenizer.encode(PROMPTS[0])])
    with torch.no_grad():
        exact, approx = cpu(ids), gpu(ids.cuda()).float().cpu()
    relative = ((approx - exact).abs().max() / exact.abs().max()).item()
    print(f"\ncuda {dtype}: max logit difference {relative:.2%} of the largest logit")
    assert relative < 0.05
    out = gpu.generate(ids, max_new_tokens=20, do_sample=True, seed=0)
    assert out.shape == (1, ids.size(1) + 20) and out.is_cuda


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_decode_step_on_cuda(tiny_checkpoint, on_cpu, dtype):
    """generate(compile=True): torch.compile with CUDA graphs; fp32 picks the eager loop's tokens."""
    _, tokenizer = on_cpu
    gpu = GPT2.from_pretrained(tiny_checkpoint, device="cuda", dtype=dtype)
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    options = dict(attention_mask=attention_mask, max_new_tokens=30, eos_token_id=tokenizer.eos_token_id)
    compiled = gpu.generate(input_ids, compile=True, **options)
    assert compiled.is_cuda and compiled.size(0) == len(PROMPTS)
    if dtype == torch.float32:
        assert torch.equal(compiled, gpu.generate(input_ids, **options))
    assert torch.equal(gpu.generate(input_ids, compile=True, **options), compiled)  # replayed: the same tokens


def test_int8_on_cuda_stays_close_to_fp32(tiny_checkpoint, on_cpu):
    """quantize="int8" on a GPU: int8 weights there, multiplied by the dequantizing product, eager and compiled."""
    cpu, tokenizer = on_cpu
    gpu = GPT2.from_pretrained(tiny_checkpoint, device="cuda", quantize="int8")
    assert gpu.head.q.is_cuda and gpu.head.q.dtype == torch.int8 and gpu.h[0].attn.c_attn.weight.q.is_cuda
    ids = torch.tensor([tokenizer.encode(PROMPTS[0])])
    with torch.no_grad():
        exact, approx = cpu(ids), gpu(ids.cuda()).cpu()
    relative = ((approx - exact).abs().max() / (exact.max() - exact.min())).item()
    top1 = (approx.argmax(-1) == exact.argmax(-1)).float().mean().item()
    print(f"\ncuda int8 vs cpu fp32: {relative:.2%} of the logit range, top-1 agreement {top1:.0%}")
    assert relative < 0.05 and top1 >= 0.85
    eager = gpu.generate(ids.cuda(), max_new_tokens=20)
    compiled = gpu.generate(ids.cuda(), max_new_tokens=20, compile=True)
    agree = (eager == compiled).float().mean().item()
    print(f"cuda int8 compiled vs eager greedy tokens: {agree:.0%} the same")
    assert compiled.shape == eager.shape and agree >= 0.85


def test_explore_on_cuda_shows_the_cpu_numbers(tiny_checkpoint, on_cpu):
    from minigpt2.explore import explore

    cpu, tokenizer = on_cpu
    gpu = GPT2.from_pretrained(tiny_checkpoint, device="cuda")
    on_gpu, on_host = (explore(m, tokenizer, PROMPTS[0], max_new_tokens=8) for m in (gpu, cpu))
    assert on_gpu.tokens == on_host.tokens
    for name in ("candidate_probs", "patterns", "lens_probs", "attribution"):
        difference = (getattr(on_gpu, name) - getattr(on_host, name)).abs().max().item()
        print(f"explore on cuda vs cpu, {name}: {difference:.1e}")
        assert difference < 1e-3
