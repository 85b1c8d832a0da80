"""minigpt2/generation/processors.py and stopping.py: repetition controls, banned words, forced and held-back eos,
stop strings and max_time, and the per-step scores, against transformers' generate; and what they refuse."""

from __future__ import annotations

import pytest
import torch
from conftest import stop_string_across_a_token_boundary, worst_deviation
from transformers import AutoTokenizer
from transformers.generation.logits_process import (
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

NEW_TOKENS = 25


def processor_cases(liked, prompt_length):
    return [
        dict(repetition_penalty=1.5),
        dict(repetition_penalty=0.7),
        dict(no_repeat_ngram_size=2),
        dict(no_repeat_ngram_size=3),
        dict(bad_words_ids=[[liked], [5, 6]]),
        dict(min_new_tokens=10),
        dict(min_length=prompt_length + 12),  # min_length counts the prompt
        dict(forced_eos_token_id=3),
        dict(
            repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=5, bad_words_ids=[[7]], forced_eos_token_id=3
        ),
    ]


@pytest.mark.parametrize("num_beams", [1, 4])
@pytest.mark.parametrize("case", range(9))
def test_each_processor_and_all_together_match_transformers(padded_batch, case, num_beams):
    model, reference, tokenizer, input_ids, attention_mask, liked = padded_batch
    options = processor_cases(liked, input_ids.size(1))[case]
    eos = tokenizer.eos_token_id  # rare in this model's text: rows run long enough for every processor to act
    common = dict(attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, eos_token_id=eos, num_beams=num_beams)
    ours = model.generate(input_ids, **common, **options)
    with torch.no_grad():
        theirs = reference.generate(input_ids, do_sample=False, pad_token_id=eos, **common, **options)
    assert ours.tolist() == theirs.tolist()
    # The processor did something here: some step's scores differ from the unprocessed ones.
    processed = model.generate(input_ids, output_scores=True, **common, **options).scores
    plain = model.generate(input_ids, output_scores=True, **common).scores
    assert any(not torch.equal(a, b) for a, b in zip(processed, plain, strict=False))


@pytest.mark.parametrize("case", range(9))
def test_seeded_sampling_with_each_processor_is_transformers_token_for_token(padded_batch, case):
    model, reference, tokenizer, input_ids, attention_mask, liked = padded_batch
    options = {**processor_cases(liked, input_ids.size(1))[case], "temperature": 0.8, "top_k": 30, "top_p": 0.95}
    common = dict(attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, eos_token_id=tokenizer.eos_token_id)
    ours = model.generate(input_ids, do_sample=True, seed=case, **common, **options)
    torch.manual_seed(case)  # transformers draws from the global generator
    with torch.no_grad():
        theirs = reference.generate(input_ids, do_sample=True, pad_token_id=tokenizer.eos_token_id, **common, **options)
    assert ours.tolist() == theirs.tolist()


def test_sampled_first_tokens_follow_transformers_processed_probabilities(padded_batch):
    """20,000 seeded draws of one token after repetition penalty, n-gram ban, a bad word, temperature and
    top-k: each token's frequency within 5 standard errors of transformers' processed probability."""
    model, _, tokenizer, _, _, liked = padded_batch
    ids = torch.tensor([tokenizer.encode("the the cat sat on the")])
    options = dict(repetition_penalty=2.0, no_repeat_ngram_size=2, bad_words_ids=[[liked]], temperature=0.9, top_k=40)
    draws = 20_000
    sampled = model.generate(ids, max_new_tokens=1, do_sample=True, num_return_sequences=draws, seed=0, **options)
    frequency = torch.bincount(sampled[:, -1], minlength=model.config.vocab_size).double() / draws
    with torch.no_grad():
        scores = model(ids)[:, -1].double()
    for process in (
        RepetitionPenaltyLogitsProcessor(2.0),
        NoRepeatNGramLogitsProcessor(2),
        NoBadWordsLogitsProcessor([[liked]]),
        TemperatureLogitsWarper(0.9),
        TopKLogitsWarper(40),
    ):
        scores = process(ids, scores)
    expected = scores.softmax(dim=-1)[0]
    allowed, worst = expected > 0, worst_deviation(expected, frequency, draws)
    print(f"\nprocessed sampling: {int(allowed.sum())} tokens allowed, worst deviation {worst:.2f} standard errors")
    assert frequency[~allowed].sum() == 0 and frequency[liked] == 0  # banned and filtered tokens never drawn
    assert worst < 5


def test_output_scores_are_transformers_processed_scores(padded_batch):
    model, reference, tokenizer, input_ids, attention_mask, _ = padded_batch
    eos = tokenizer.eos_token_id
    options = dict(
        attention_mask=attention_mask,
        max_new_tokens=8,
        repetition_penalty=1.4,
        no_repeat_ngram_size=2,
        eos_token_id=eos,
    )
    ours = model.generate(input_ids, output_scores=True, **options)
    with torch.no_grad():
        theirs = reference.generate(
            input_ids, do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=eos, **options
        )
    assert len(ours.scores) == len(theirs.scores) == 8
    for mine, their in zip(ours.scores, theirs.scores, strict=True):
        torch.testing.assert_close(mine, their, rtol=0, atol=1e-4)  # -inf where banned, in both
    chosen = torch.stack([s.log_softmax(-1) for s in theirs.scores], 1).gather(2, ours.sequences[:, -8:, None])
    torch.testing.assert_close(ours.token_logprobs, chosen[..., 0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_stop_strings_stop_where_transformers_stops(padded_batch, tiny_checkpoint, num_beams):
    model, reference, tokenizer, input_ids, attention_mask, liked = padded_batch
    eos = tokenizer.eos_token_id  # given to both: transformers would otherwise take the checkpoint's own
    common = dict(attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, num_beams=num_beams, eos_token_id=eos)
    free = model.generate(input_ids, **common)
    stop = stop_string_across_a_token_boundary(tokenizer, free[0, input_ids.size(1) :])
    ours = model.generate(
        input_ids, **common, stop_strings=[stop, "never in the text"], tokenizer=tokenizer, pad_token_id=liked
    )
    with torch.no_grad():
        theirs = reference.generate(
            input_ids, do_sample=False, pad_token_id=liked, stop_strings=[stop, "never in the text"],
            tokenizer=AutoTokenizer.from_pretrained(tiny_checkpoint), **common,
        )  # fmt: skip
    assert ours.tolist() == theirs.tolist()
    if num_beams == 1:
        first = ours[0, input_ids.size(1) :].tolist()
        ends = next(k for k in range(1, len(first) + 1) if stop in tokenizer.decode(first[:k]))
        assert ends < len(first) and set(first[ends:]) == {liked}  # stopped there; padding after, as others ran on


def test_max_time_stops_every_row(padded_batch):
    model, _, _, input_ids, attention_mask, _ = padded_batch
    out = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, max_time=1e-9)
    assert out.size(1) == input_ids.size(1) + 1  # the time is checked after each token, as transformers does


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(repetition_penalty=0.0), "repetition_penalty must be above 0"),
        (dict(no_repeat_ngram_size=-2), "no_repeat_ngram_size must be 1 or more"),
        (dict(bad_words_ids=[[]]), "bad_words_ids must be a non-empty list"),
        (dict(bad_words_ids=[[10**6]]), "bad_words_ids holds ids outside the vocabulary"),
        (
            dict(min_new_tokens=3, eos_token_id=None),
            "min_new_tokens holds the eos token back, so it needs eos_token_id",
        ),
        (dict(forced_eos_token_id=-1), "forced_eos_token_id -1 is outside the vocabulary"),
        (dict(stop_strings=["x"]), "stop_strings needs the tokenizer"),
        (dict(stop_strings=[""], tokenizer=object()), "stop_strings must be a non-empty string"),
        (dict(max_time=0), "max_time must be above 0"),
    ],
)
def test_bad_processor_and_stop_requests(padded_batch, options, message):
    model, _, _, input_ids, _, _ = padded_batch
    with pytest.raises(ValueError, match=message):
        model.generate(input_ids[:1], max_new_tokens=3, **options)
