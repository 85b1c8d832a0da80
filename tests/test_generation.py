"""Batches with left padding, sampling, finished rows and streaming; against transformers where it does the same."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import LOGIT_TOLERANCE, run_cli, worst_deviation
from transformers import GPT2LMHeadModel
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from minigpt2 import GPT2, Tokenizer

PROMPTS = ["Once upon a time", "Hello", "The quick brown fox jumps over the lazy dog because", "안녕하세요 👋"]
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return GPT2.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    return GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()


def new_tokens(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


def test_encode_batch_pads_on_the_left(tiny):
    _, tokenizer = tiny
    input_ids, attention_mask = tokenizer.encode_batch(["Hello there", "Hi", ""])
    lengths = attention_mask.sum(dim=1).tolist()
    assert lengths == [len(tokenizer.encode("Hello there")), len(tokenizer.encode("Hi")), 1]
    for row, mask, text in zip(input_ids.tolist(), attention_mask.tolist(), ["Hello there", "Hi"], strict=False):
        real = [t for t, m in zip(row, mask, strict=True) if m]
        assert real == tokenizer.encode(text) and mask == sorted(mask)  # zeros first, then ones
    assert input_ids[2, -1] == tokenizer.eos_token_id  # an empty text starts from eos
    assert (input_ids[attention_mask == 0] == tokenizer.eos_token_id).all()  # pad = eos


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
    draws = 20_000
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


TEXTS = ["안녕하세요, 세계! 👋🏽 👨‍👩‍👧", "こんにちは 世界", "plain ASCII", "naïve café ☕"]


@pytest.mark.parametrize("text", TEXTS)
def test_streamed_text_is_never_broken_and_joins_to_the_whole(tiny, text):
    _, tokenizer = tiny
    ids = tokenizer.encode(text)
    pieces = list(tokenizer.decode_stream(iter(ids)))
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in piece for piece in pieces)  # no half of a character printed on its own
    if text == TEXTS[0]:  # the case that matters happens: some tokens hold only part of a character
        assert any("\ufffd" in tokenizer.decode([i]) for i in ids)


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


def test_cli_streams_the_same_text_it_prints_at_the_end(tiny_checkpoint):
    for prompt in ("안녕하세요 👋", "Once upon a time"):
        args = (prompt, "--model", str(tiny_checkpoint), "--max-new-tokens", "30")
        streamed, at_end = run_cli(*args, "--stream"), run_cli(*args, "--no-stream")
        assert streamed.returncode == at_end.returncode == 0, streamed.stderr + at_end.stderr
        assert streamed.stdout == at_end.stdout and streamed.stdout.startswith(prompt)


def test_cli_several_prompts_match_each_prompt_alone(tiny_checkpoint):
    args = ("--model", str(tiny_checkpoint), "--max-new-tokens", "15")
    both = run_cli("Hello", "The quick brown fox", *args)
    assert both.returncode == 0, both.stderr
    alone = [run_cli(prompt, *args).stdout for prompt in ("Hello", "The quick brown fox")]
    assert both.stdout == f"0: {alone[0]}1: {alone[1]}"  # each "i: text" line, as the prompt alone prints it


def test_cli_sampling_repeats_with_a_seed(tiny_checkpoint):
    args = ("Hello", "--model", str(tiny_checkpoint), "--max-new-tokens", "15", "--do-sample", "--top-p", "0.9")
    first, second = run_cli(*args, "--seed", "3"), run_cli(*args, "--seed", "3")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    three = run_cli(*args, "--seed", "4", "--num-return-sequences", "3", "--temperature", "1.5").stdout
    labels_and_texts = re.split(r"^(\d+): ", three, flags=re.MULTILINE)[1:]
    assert labels_and_texts[::2] == ["0", "1", "2"] and len(set(labels_and_texts[1::2])) == 3  # three samples
