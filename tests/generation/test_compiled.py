"""minigpt2/generation/compiled.py: the static decode step computes what the ordinary cached forward pass
computes, and generate(compile=True) (torch.compile on the CPU) picks the plain loop's tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import LOGIT_TOLERANCE

from minigpt2.generation.compiled import decode_step

PROMPTS = ["Once upon a time", "Hi", "안녕하세요 👋"]


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
