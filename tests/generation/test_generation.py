"""minigpt2/generation/__init__.py: the loop. Cached and plain loops, lengths, finished rows and eos,
left-padded batches, sampling and its seeds, streaming, and the requests it refuses before any work;
against transformers' generate where it does the same."""

from __future__ import annotations

import pytest
import torch
from conftest import LOGIT_TOLERANCE, RANDOM_CONFIG, random_prompt, worst_deviation
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from minigpt2 import GPT2

PROMPTS = ["Once upon a time", "Hello", "The quick brown fox jumps over the lazy dog because", "안녕하세요 👋"]
NEW_TOKENS = 20


def new_tokens(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


# ---- on a random model: lengths, eos, refusals ----


def test_cached_and_plain_loops_pick_the_same_tokens(random_model):
    model = random_model
    ids = random_prompt(batch=3, seed=3)
    cached = model.generate(ids, max_new_tokens=20)
    plain = model.generate(ids, max_new_tokens=20, use_cache=False)
    assert cached.shape == (3, 25) and cached.dtype == torch.long
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :5], ids)


def test_max_length_counts_the_prompt(random_model):
    model = random_model
    ids = random_prompt()
    assert torch.equal(model.generate(ids, max_length=9), model.generate(ids, max_new_tokens=4))
    assert torch.equal(model.generate(ids, max_new_tokens=0), ids)


def test_num_return_sequences_repeats_each_prompt(random_model):
    model = random_model
    ids = random_prompt()
    out = model.generate(ids, max_new_tokens=6, num_return_sequences=2)
    assert out.shape == (4, 11)
    assert torch.equal(out[0], out[1]) and torch.equal(out[2], out[3])


def test_stops_at_eos_and_pads_finished_rows(random_model):
    model = random_model
    ids = random_prompt()
    free = model.generate(ids, max_new_tokens=10)
    eos = int(free[0, -1])  # pretend the last token row 0 emits is the end of text
    pad = next(t for t in range(RANDOM_CONFIG.vocab_size) if t != eos)
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
        (dict(max_new_tokens=3, max_length=9), "exactly one of max_new_tokens"),
        (dict(max_new_tokens=-1), "max_new_tokens must be 0 or more"),
        (dict(max_length=4), "shorter than the prompt"),
        (dict(max_new_tokens=3, num_return_sequences=0), "num_return_sequences"),
        (dict(max_new_tokens=3, eos_token_id=97), "eos_token_id 97 is outside the vocabulary"),
        (dict(max_new_tokens=3, eos_token_id=1, pad_token_id=-1), "pad_token_id -1 is outside the vocabulary"),
    ],
)
def test_bad_requests_fail_before_any_work(random_model, kwargs, message, monkeypatch):
    model = random_model
    monkeypatch.setattr(GPT2, "forward", lambda *a, **k: pytest.fail("the model ran before the request was checked"))
    with pytest.raises(ValueError, match=message):
        model.generate(random_prompt(), **kwargs)


@pytest.mark.parametrize(
    "input_ids, message",
    [
        (torch.zeros(1, 0, dtype=torch.long), "prompt is empty"),
        (torch.tensor([1, 2, 3]), "shape \\[batch, tokens\\]"),
        (torch.tensor([[1.0, 2.0]]), "LongTensor"),
        (torch.tensor([[1, 97]]), "outside the vocabulary"),
    ],
)
def test_bad_input_ids(random_model, input_ids, message):
    model = random_model
    with pytest.raises(ValueError, match=message):
        model.generate(input_ids, max_new_tokens=2)


# ---- on the tiny checkpoint: padding, sampling, streaming ----


def test_padded_logits_match_transformers(tiny, reference):
    model, tokenizer = tiny
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # what transformers' generate passes
    ours = model(input_ids, attention_mask=attention_mask)
    with torch.no_grad():
        theirs = reference(input_ids, attention_mask=attention_mask, position_ids=positions).logits
    real = attention_mask.bool()
    diff = (ours[real] - theirs[real]).abs().max().item()
    print(f"\nleft-padded batch: max abs logit difference on real tokens {diff:.3e}")
    assert diff <= LOGIT_TOLERANCE
    for i, text in enumerate(PROMPTS):  # and each row is what the prompt gives alone
        alone = model(torch.tensor([tokenizer.encode(text)]))[0]
        assert (ours[i][real[i]] - alone).abs().max().item() <= LOGIT_TOLERANCE


def test_batched_greedy_equals_each_prompt_alone_and_transformers(tiny, reference):
    model, tokenizer = tiny
    eos = tokenizer.eos_token_id
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    T = input_ids.size(1)
    ours = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, eos_token_id=eos)
    theirs = reference.generate(
        input_ids,
        attention_mask=attention_mask,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    assert torch.equal(ours, theirs)
    for i, text in enumerate(PROMPTS):
        ids = torch.tensor([tokenizer.encode(text)])
        alone = model.generate(ids, max_new_tokens=NEW_TOKENS, eos_token_id=eos)[0, ids.size(1) :].tolist()
        assert new_tokens(ours[i, T:].tolist(), eos) == new_tokens(alone, eos)
    plain = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, use_cache=False)
    cached = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=NEW_TOKENS)
    assert torch.equal(plain, cached)


def test_finished_rows_get_pad_and_the_loop_stops_when_all_have(tiny):
    model, tokenizer = tiny
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS[:2])
    free = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=12)
    T = input_ids.size(1)
    eos = int(free[0, T + 3])  # pretend row 0's fourth new token ends the text
    pad = next(t for t in range(model.config.vocab_size) if t not in (eos, *free[:, T:].flatten().tolist()))
    out = model.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=pad
    )
    row0 = out[0, T:].tolist()
    end = row0.index(eos)
    assert end <= 3 and row0[: end + 1] == free[0, T : T + end + 1].tolist()
    assert set(row0[end + 1 :]) <= {pad}
    if eos not in free[1, T:].tolist():
        assert out.size(1) == T + 12 and torch.equal(out[1], free[1])


SAMPLING = [
    dict(temperature=0.7, top_k=0),
    dict(temperature=1.0, top_k=8),
    dict(temperature=1.0, top_k=0, top_p=0.6),
    dict(temperature=1.3, top_k=20, top_p=0.9),
    dict(),  # transformers' defaults: temperature 1, top_k 50
]


@pytest.mark.parametrize("options", SAMPLING, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_first_token_frequencies_follow_the_filtered_softmax(tiny, options):
    """Many seeded draws of one token: frequencies are within 5 standard errors of the probabilities
    that transformers' warpers (temperature, then top-k, then top-p) give, and tokens they filter
    out never appear."""
    model, tokenizer = tiny
    ids = torch.tensor([tokenizer.encode("Once upon a time")])
    draws = 10_000
    sampled = model.generate(ids, max_new_tokens=1, do_sample=True, num_return_sequences=draws, seed=0, **options)
    counts = torch.bincount(sampled[:, -1], minlength=model.config.vocab_size).double()
    frequency = counts / draws

    scores = model(ids)[:, -1].double()
    warpers = [TemperatureLogitsWarper(options.get("temperature", 1.0))]
    if options.get("top_k", 50):
        warpers.append(TopKLogitsWarper(options.get("top_k", 50)))
    if options.get("top_p", 1.0) < 1.0:
        warpers.append(TopPLogitsWarper(options["top_p"]))
    for warp in warpers:
        scores = warp(ids, scores)
    expected = scores.softmax(dim=-1)[0]

    allowed, worst = expected > 0, worst_deviation(expected, frequency, draws)
    print(f"\n{options}: {int(allowed.sum())} tokens allowed, worst deviation {worst:.2f} standard errors")
    assert counts[~allowed].sum() == 0  # filtered tokens are never drawn
    assert worst < 5


def test_top_k_1_is_greedy_and_seeds_repeat(tiny):
    model, tokenizer = tiny
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    greedy = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=NEW_TOKENS)
    top1 = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, do_sample=True, top_k=1)
    assert torch.equal(greedy, top1)

    def sample(**kwargs):
        return model.generate(
            input_ids, attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, do_sample=True, **kwargs
        )

    assert torch.equal(sample(seed=7), sample(seed=7))
    assert torch.equal(sample(seed=7), sample(generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(sample(seed=7), sample(seed=8))
    several = model.generate(input_ids[:1], max_new_tokens=NEW_TOKENS, do_sample=True, num_return_sequences=4, seed=1)
    assert several.shape == (4, input_ids.size(1) + NEW_TOKENS) and len({tuple(r) for r in several.tolist()}) > 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(do_sample=True, temperature=0), "temperature must be above 0"),
        (dict(do_sample=True, temperature=-1.0), "temperature must be above 0"),
        (dict(do_sample=True, top_p=0), r"top_p must be in \(0, 1\]"),
        (dict(do_sample=True, top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(do_sample=True, top_k=-1), "top_k must be 0"),
        (dict(temperature=0.5), "only applies when sampling"),
        (dict(do_sample=True, seed=1, generator=torch.Generator()), "seed or generator"),
        (dict(attention_mask=torch.tensor([[1, 1, 0]])), "pad prompts on the left"),
        (dict(attention_mask=torch.tensor([[0, 0, 0]])), "all padding"),
        (dict(attention_mask=torch.tensor([[1, 1]])), "attention_mask must have the prompt's shape"),
        (dict(attention_mask=torch.tensor([[0, 2, 1]])), "only 0"),
    ],
)
def test_bad_sampling_and_padding_requests(tiny, kwargs, message):
    model, _ = tiny
    with pytest.raises(ValueError, match=message):
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, **kwargs)


def test_stream_yields_the_tokens_generate_returns(tiny):
    model, tokenizer = tiny
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    options = dict(attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, eos_token_id=tokenizer.eos_token_id)
    steps = list(model.stream(input_ids, **options))
    out = model.generate(input_ids, **options)
    assert torch.equal(torch.stack([s.tokens for s in steps], dim=1), out[:, input_ids.size(1) :])
    assert torch.equal(steps[-1].sequences, out)
    assert steps[0].logits.shape == (len(PROMPTS), model.config.vocab_size)
    row = out[3, input_ids.size(1) :].tolist()
    streamed = "".join(tokenizer.decode_stream(iter(new_tokens(row, tokenizer.eos_token_id))))
    assert streamed == tokenizer.decode(new_tokens(row, tokenizer.eos_token_id))
