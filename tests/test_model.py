"""The model and the generation loop on their own: shapes, the KV cache, stopping, and refusals."""

from __future__ import annotations

import pytest
import torch

from minigpt2 import GPT2, PRESETS, GPT2Config

TINY = GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4, eos_token_id=96)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT2(TINY).eval()


def prompt(batch=2, length=5, seed=0):
    return torch.randint(0, TINY.vocab_size - 1, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_shape_and_next_token(model):
    ids = prompt()
    logits = model(ids)
    assert logits.shape == (2, 5, TINY.vocab_size)  # [batch, tokens, vocabulary]
    next_token = logits[0, -1].argmax()
    assert model.generate(ids[:1], max_new_tokens=1)[0, -1] == next_token


def test_cache_in_pieces_equals_one_full_forward(model):
    ids = prompt(length=12)
    full = model(ids)
    cache = model.new_cache(batch_size=2)
    pieces = [model(ids[:, a:b], cache) for a, b in ((0, 5), (5, 6), (6, 10), (10, 12))]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)


def test_cached_and_plain_loops_pick_the_same_tokens(model):
    ids = prompt(batch=3, seed=3)
    cached = model.generate(ids, max_new_tokens=20)
    plain = model.generate(ids, max_new_tokens=20, use_cache=False)
    assert cached.shape == (3, 25) and cached.dtype == torch.long
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :5], ids)


def test_max_length_counts_the_prompt(model):
    ids = prompt()
    assert torch.equal(model.generate(ids, max_length=9), model.generate(ids, max_new_tokens=4))
    assert torch.equal(model.generate(ids, max_new_tokens=0), ids)


def test_num_return_sequences_repeats_each_prompt(model):
    ids = prompt()
    out = model.generate(ids, max_new_tokens=6, num_return_sequences=2)
    assert out.shape == (4, 11)
    assert torch.equal(out[0], out[1]) and torch.equal(out[2], out[3])


def test_stops_at_eos_and_pads_finished_rows(model):
    ids = prompt()
    free = model.generate(ids, max_new_tokens=10)
    eos = int(free[0, -1])  # pretend the last token row 0 emits is the end of text
    pad = next(t for t in range(TINY.vocab_size) if t != eos)
    stopped = model.generate(ids, max_new_tokens=10, eos_token_id=eos, pad_token_id=pad)
    generated = stopped[0, 5:].tolist()
    end = generated.index(eos)
    assert generated[: end + 1] == free[0, 5 : 5 + end + 1].tolist()
    assert generated[end + 1 :] and all(t == pad for t in generated[end + 1 :])  # finished: padding from then on
    if eos not in free[1, 5:].tolist():
        assert stopped.size(1) == 15  # row 1 never finished, so the loop ran to the end
    only_row0 = model.generate(ids[:1], max_new_tokens=10, eos_token_id=eos)
    assert only_row0.size(1) == 5 + end + 1  # a batch whose rows have all finished stops early


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=28), "longer than the model's context"),
        (dict(max_length=33), "longer than the model's context"),
        (dict(), "exactly one of max_new_tokens"),
        (dict(max_new_tokens=3, max_length=9), "exactly one of max_new_tokens"),
        (dict(max_new_tokens=-1), "max_new_tokens must be 0 or more"),
        (dict(max_length=4), "shorter than the prompt"),
        (dict(max_new_tokens=3, num_return_sequences=0), "num_return_sequences"),
        (dict(max_new_tokens=3, eos_token_id=97), "eos_token_id 97 is outside the vocabulary"),
        (dict(max_new_tokens=3, eos_token_id=1, pad_token_id=-1), "pad_token_id -1 is outside the vocabulary"),
    ],
)
def test_bad_requests_fail_before_any_work(model, kwargs, message, monkeypatch):
    monkeypatch.setattr(GPT2, "forward", lambda *a, **k: pytest.fail("the model ran before the request was checked"))
    with pytest.raises(ValueError, match=message):
        model.generate(prompt(), **kwargs)


@pytest.mark.parametrize(
    "input_ids, message",
    [
        (torch.zeros(1, 0, dtype=torch.long), "prompt is empty"),
        (torch.tensor([1, 2, 3]), "shape \\[batch, tokens\\]"),
        (torch.tensor([[1.0, 2.0]]), "LongTensor"),
        (torch.tensor([[1, 97]]), "outside the vocabulary"),
    ],
)
def test_bad_input_ids(model, input_ids, message):
    with pytest.raises(ValueError, match=message):
        model.generate(input_ids, max_new_tokens=2)


def test_forward_refuses_more_than_the_context_or_the_cache(model):
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
