"""minigpt2/generation/compiled.py: the static decode step computes what the ordinary cached forward pass
computes; generate(compile=True) (torch.compile on the CPU) picks the plain loop's tokens; and on the CPU the
compiled step is used only where this machine measured it faster than eager, else generation warns and runs
eager."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import LOGIT_TOLERANCE

from minigpt2.generation import compiled
from minigpt2.generation.compiled import decode_step
from minigpt2.machine import measured

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


@pytest.fixture
def own_record(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.slow
def test_compiled_generation_gives_the_plain_loops_tokens(tiny, own_record, monkeypatch):
    """torch.compile on the CPU (inductor; on a GPU the same step also gets CUDA graphs: test_cuda.py), used
    whatever this machine measured."""
    monkeypatch.setattr(compiled, "time_compiled_against_eager", lambda *args: {"compiled_ms": 1, "eager_ms": 2})
    model, tokenizer = tiny
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    options = dict(attention_mask=attention_mask, max_new_tokens=25, eos_token_id=tokenizer.eos_token_id)
    plain = model.generate(input_ids, use_cache=False, **options)
    assert torch.equal(model.generate(input_ids, compile=True, **options), plain)
    options["max_new_tokens"] = 10  # another length reuses the compiled step: the cache spans the context
    assert torch.equal(model.generate(input_ids, compile=True, **options), model.generate(input_ids, **options))
    with pytest.raises(ValueError, match="needs use_cache=True"):
        model.generate(input_ids, compile=True, use_cache=False, **options)


def test_on_the_cpu_compile_is_timed_once_and_a_slower_one_runs_eager(tiny, own_record, monkeypatch):
    """The first compiled step is timed against eager, the verdict kept; where compiled is not faster,
    generation warns in one line with both figures and runs eager, with the plain loop's tokens, and a later
    run reads the verdict and compiles nothing."""
    model, tokenizer = tiny
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    options = dict(attention_mask=attention_mask, max_new_tokens=6, eos_token_id=tokenizer.eos_token_id)
    plain = model.generate(input_ids, **options)
    timed = []
    real = compiled.time_compiled_against_eager

    def slower_compiled(*args):
        timed.append(real(*args))  # the real timing, with its compiling and its cache handling
        return {"compiled_ms": 9.0, "eager_ms": 3.0}

    monkeypatch.setattr(compiled, "time_compiled_against_eager", slower_compiled)
    with pytest.warns(UserWarning, match=r"compile=True runs eager on this CPU: its compiled decode step took 9\.0 ms"):
        assert torch.equal(model.generate(input_ids, compile=True, **options), plain)  # the cache rolled back
    assert len(timed) == 1 and timed[0]["compiled_ms"] > 0 and timed[0]["eager_ms"] > 0
    (what,) = [key for key in measured() if key.startswith("compile=True")]
    assert "2 layers x 64, float32" in what and measured()[what] == {"compiled_ms": 9.0, "eager_ms": 3.0}
    with pytest.warns(UserWarning, match="runs eager"):
        assert torch.equal(model.generate(input_ids, compile=True, **options), plain)
    assert len(timed) == 1  # the kept verdict: nothing timed, nothing compiled
