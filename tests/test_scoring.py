"""minigpt2/scoring.py: each figure checked against the same one
worked out from transformers' GPT2LMHeadModel on the same checkpoint (the `reference` fixture), never against
numbers written here. Every comparison prints the difference it saw. (The loss: test_model_loss.py; the
commands: cli/test_scoring_commands.py.)

    score      model.score == log_softmax of transformers' logits at the next tokens (left and right padding),
               and == generate(..., output_scores=True).token_logprobs on the tokens it generated
    lm-eval    loglikelihood == the sum of the continuation's log-probabilities from transformers' logits
    perplexity the guide's sliding-window loop on transformers == the same loop on minigpt2; scoring.perplexity
               == the exact per-token sum over the same windows from transformers; batched == unbatched
    published  the guide's and build-nanogpt's figures, when the official weights and data are cached (else skip)
"""

from __future__ import annotations

import math

import pytest
import torch
from scoring_cases import (
    LOSS_TOLERANCE,
    RELATIVE,
    SUM_TOLERANCE,
    accuracy,
    exact_reference,
    examples_for,
    padded,
    reference_choices,
    reference_logprobs,
)

from minigpt2.parity.reference import guide_perplexity
from minigpt2.scoring import loglikelihood, multiple_choice, perplexity, windows


@pytest.mark.parametrize("side", ["right", "left"])
def test_score_matches_transformers(tiny, reference, rows, side):
    model, tokenizer = tiny
    ids, mask = padded(rows, side, tokenizer.eos_token_id)
    got = model.score(ids, attention_mask=mask)
    assert got.shape == (ids.size(0), ids.size(1) - 1) and got.dtype == torch.float32
    expected = reference_logprobs(reference, ids, mask)
    scored = (mask[:, 1:] * mask[:, :-1]).bool()  # a token and the one before it are real
    diff = (got - expected)[scored].abs().max().item()
    print(f"{side}-padded score: max diff {diff:.2e} over {int(scored.sum())} tokens")
    assert diff < LOSS_TOLERANCE
    assert torch.equal(got[~scored], torch.zeros_like(got[~scored]))  # no real token before it: nothing scored


def test_score_of_a_padded_row_is_the_row_alone(tiny, rows):
    """A padded row's log-probabilities are the row's own, and its sum is the row's log-likelihood: padding adds 0."""
    model, tokenizer = tiny
    for side in ("left", "right"):
        ids, mask = padded(rows, side, tokenizer.eos_token_id)
        got = model.score(ids, attention_mask=mask)
        worst = 0.0
        for i, row in enumerate(rows):
            alone = model.score(torch.tensor([row]))[0]
            real = got[i, : len(row) - 1] if side == "right" else got[i, ids.size(1) - len(row) :]
            worst = max(worst, (real - alone).abs().max().item(), (got[i].sum() - alone.sum()).abs().item())
        print(f"{side}-padded rows against each row alone: max diff {worst:.2e}")
        assert worst < LOSS_TOLERANCE, side


def test_score_equals_generate_token_logprobs(padded_batch):
    model, reference, _, input_ids, attention_mask, _ = padded_batch
    out = model.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=12, eos_token_id=None, output_scores=True
    )
    T = input_ids.size(1)
    mask = torch.cat([attention_mask, torch.ones_like(out.sequences[:, T:])], dim=1)
    got = model.score(out.sequences, attention_mask=mask)[:, T - 1 :]  # the generated tokens' entries
    diff = (got - out.token_logprobs).abs().max().item()
    diff_ref = (got - reference_logprobs(reference, out.sequences, mask)[:, T - 1 :]).abs().max().item()
    print(
        f"score of generated tokens vs generate's token_logprobs: max diff {diff:.2e}; vs transformers {diff_ref:.2e}"
    )
    assert got.shape == out.token_logprobs.shape == (input_ids.size(0), 12)
    assert diff < LOSS_TOLERANCE and diff_ref < LOSS_TOLERANCE


# ---- loglikelihood: lm-eval's definition ----


def reference_loglikelihood(reference, context: list[int], continuation: list[int], n_positions: int):
    """lm-eval's `hf` loglikelihood from transformers' logits: the two joined, cut to the last n_positions + 1
    tokens, the last not fed; the continuation's log-probabilities summed; greedy if each is the argmax."""
    whole = (context + continuation)[-(n_positions + 1) :]
    fed = torch.tensor([whole[:-1]])
    with torch.no_grad():
        logits = reference(fed).logits[0, -len(continuation) :].float()
    target = torch.tensor(continuation)
    logprob = logits.log_softmax(-1).gather(-1, target[:, None]).sum().item()
    return logprob, bool((logits.argmax(-1) == target).all())


def greedy_continuation(reference, context: list[int], n: int) -> list[int]:
    ids = torch.tensor([context])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, reference(ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids[0, len(context) :].tolist()


def test_loglikelihood_matches_transformers(tiny, reference, rows, long_ids):
    model, _ = tiny
    n_positions = model.config.n_positions
    _, ids = long_ids
    requests = [
        (rows[0][:10], rows[0][10:20]),
        (rows[1], rows[3][:1]),  # one token
        (rows[2][:5], greedy_continuation(reference, rows[2][:5], 6)),  # the greedy continuation
        (rows[3][:1], greedy_continuation(reference, rows[3][:1], 1)),
        (ids[:200], ids[200:210]),  # longer than the context: cut on the left
        (ids[:3], ids[3 : 3 + n_positions]),  # a continuation as long as the context
        (rows[2][:30], rows[0][:8]),
    ]
    expected = [reference_loglikelihood(reference, ctx, cont, n_positions) for ctx, cont in requests]
    assert {greedy for _, greedy in expected} == {True, False}  # both answers are asked for
    for batch_size in (1, 3):
        got = loglikelihood(model, requests, batch_size=batch_size)
        diff = max(abs(g - e) for (g, _), (e, _) in zip(got, expected, strict=True))
        print(f"loglikelihood, batch_size {batch_size}: max diff {diff:.2e} over {len(requests)} requests")
        assert diff < SUM_TOLERANCE
        assert [greedy for _, greedy in got] == [greedy for _, greedy in expected]


def test_loglikelihood_refuses_what_it_cannot_score(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="continuation"):
        loglikelihood(model, [([1, 2], [])])
    with pytest.raises(ValueError, match="context"):
        loglikelihood(model, [([], [1, 2])])
    n_positions = model.config.n_positions
    with pytest.raises(ValueError, match=f"continuation of {n_positions + 1} tokens does not fit"):
        loglikelihood(model, [([1], [2] * (n_positions + 1))])


# ---- perplexity: transformers' sliding window ----


STRIDES = pytest.mark.parametrize(
    "divisor", [1, 2, 4], ids=["context", "context/2", "context/4"]
)  # stride = context / divisor


@STRIDES
def test_guide_loop_on_minigpt2_equals_transformers(tiny, reference, long_ids, divisor):
    model, _ = tiny
    context = model.config.n_positions
    stride = context // divisor
    _, ids = long_ids
    ours_nll, ours_tokens = guide_perplexity(model, ids, context, stride)
    ref_nll, ref_tokens = guide_perplexity(reference, ids, context, stride)
    relative = abs(ours_nll - ref_nll) / ref_nll
    print(
        f"guide loop, stride {stride}: NLL sum {ours_nll:.6f} vs transformers {ref_nll:.6f} "
        f"(relative diff {relative:.2e}), tokens {ours_tokens} vs {ref_tokens}"
    )
    assert relative < RELATIVE and ours_tokens == ref_tokens


@STRIDES
def test_perplexity_counts_each_token_once(tiny, reference, long_ids, divisor):
    model, _ = tiny
    context = model.config.n_positions
    stride = context // divisor
    text, ids = long_ids
    result = perplexity(model, ids, stride=stride, text=text)
    exact_nll, exact_tokens, n_windows = exact_reference(reference, ids, context, stride)
    guide_nll, guide_tokens = guide_perplexity(reference, ids, context, stride)
    relative = abs(result.nll_sum - exact_nll) / exact_nll
    print(
        f"stride {stride}, {n_windows} windows over {len(ids)} tokens: NLL sum {result.nll_sum:.6f} vs exact "
        f"{exact_nll:.6f} (relative {relative:.2e}), {result.tokens} tokens; perplexity {result.perplexity:.6f}, "
        f"the guide's loop {math.exp(guide_nll / guide_tokens):.6f} over {guide_tokens} tokens"
    )
    assert relative < RELATIVE and result.tokens == exact_tokens
    assert math.isclose(result.perplexity, math.exp(exact_nll / exact_tokens), rel_tol=RELATIVE)
    if stride == context:  # windows side by side: a window's first token has nothing before it, in both
        assert result.tokens == len(ids) - n_windows == guide_tokens
        assert math.isclose(result.nll_sum, guide_nll, rel_tol=RELATIVE)
    else:  # overlapping windows: every token from the second on, once; the guide counts one fewer per window
        assert result.tokens == len(ids) - 1
        assert guide_tokens == result.tokens - (n_windows - 1)
    assert (result.stride, result.context) == (stride, context)


def test_perplexity_batched_equals_unbatched(tiny, long_ids):
    model, _ = tiny
    text, ids = long_ids
    stride = model.config.n_positions // 4
    one = perplexity(model, ids, stride=stride, batch_size=1)
    four = perplexity(model, ids, stride=stride, batch_size=4)
    relative = abs(one.nll_sum - four.nll_sum) / one.nll_sum
    print(f"batch_size 4 vs 1: NLL sum {four.nll_sum:.6f} vs {one.nll_sum:.6f}, relative diff {relative:.2e}")
    assert relative < RELATIVE and one.tokens == four.tokens


def test_perplexity_units(tiny, long_ids):
    model, _ = tiny
    text, ids = long_ids
    result = perplexity(model, ids, stride=64, text=text)
    figures = result.as_dict()
    assert figures["bytes"] == len(text.encode("utf-8")) and figures["words"] == len(text.split())
    assert math.isclose(figures["bits_per_byte"], result.nll_sum / len(text.encode()) / math.log(2), rel_tol=1e-12)
    assert math.isclose(figures["word_perplexity"], math.exp(result.nll_sum / len(text.split())), rel_tol=1e-12)
    assert figures["perplexity"] < figures["word_perplexity"]  # more tokens than words here
    assert perplexity(model, ids, stride=64).bits_per_byte is None  # no text, no bytes to divide by


def test_windows_score_every_token_once_with_the_most_context():
    for length in (2, 5, 127, 128, 129, 300, 513):
        for context in (1, 4, 128):
            for stride in sorted({1, max(context // 4, 1), max(context // 2, 1), context}):
                spans = windows(length, context, stride)
                scored = [t for b, e, first in spans for t in range(max(first, b + 1), e)]
                assert len(scored) == len(set(scored)), (length, context, stride)
                for t in range(1, length):  # scored where the first window holding it gives it a token before it
                    holder = next(b for b, e, _ in spans if b <= t < e)
                    assert (t in scored) == (holder < t), (length, context, stride, t)
                assert spans[-1][1] == length and all(e - b <= context for b, e, _ in spans)


def test_perplexity_refuses_bad_windows(tiny):
    model, _ = tiny
    context = model.config.n_positions
    ids = list(range(10))
    for stride in (0, context + 1):
        with pytest.raises(ValueError, match="stride"):
            perplexity(model, ids, stride=stride)
    with pytest.raises(ValueError, match="context"):
        perplexity(model, ids, stride=8, context=context + 1)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(model, [5], stride=8)


# ---- multiple choice: build-nanogpt's HellaSwag ----


def test_multiple_choice_matches_build_nanogpt_on_transformers(tiny, reference):
    model, tokenizer = tiny
    examples = examples_for(tokenizer)
    result = multiple_choice(model, tokenizer, examples)
    sums, avgs = reference_choices(reference, tokenizer, examples)
    diff = max(
        abs(a - b)
        for got, ref in ((result.sum_losses, sums), (result.avg_losses, avgs))
        for row_a, row_b in zip(got, ref, strict=True)
        for a, b in zip(row_a, row_b, strict=True)
    )
    labels = [example["label"] for example in examples]
    print(f"multiple choice: max loss diff {diff:.2e}; acc {result.acc}, acc_norm {result.acc_norm}")
    assert diff < SUM_TOLERANCE
    assert (result.acc, result.acc_norm) == (accuracy(sums, labels), accuracy(avgs, labels))


# ---- the commands: minigpt2 perplexity, minigpt2 multiple-choice ----


@pytest.mark.slow
def test_gpt2_medium_shape_loss_and_guide_perplexity(medium):
    """At gpt2-medium's shape and context: the loss of a padded batch with ignored labels, and the guide's
    loop over one full 1024-token window, on minigpt2 and on transformers (the strides are tested at the
    tiny shape, where more windows cost little)."""
    model, reference = medium
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size - 1, (2, 64), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0  # the second row right-padded
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :10] = -100
    with torch.no_grad():
        ours, theirs = (
            model(ids, labels=labels, attention_mask=mask).loss,
            reference(ids, labels=labels, attention_mask=mask).loss,
        )
    long = torch.randint(0, model.config.vocab_size - 1, (1024,), generator=generator).tolist()
    ours_nll, ours_tokens = guide_perplexity(model, long, 1024, 1024)  # one window, the whole context
    ref_nll, ref_tokens = guide_perplexity(reference, long, 1024, 1024)
    relative = abs(ours_nll - ref_nll) / ref_nll
    print(
        f"gpt2-medium shape: loss diff {abs(ours - theirs).item():.2e}; guide loop, a 1024-token window: NLL sum "
        f"{ours_nll:.4f} vs {ref_nll:.4f} (relative {relative:.2e}), {ours_tokens} vs {ref_tokens} tokens"
    )
    assert abs(ours - theirs).item() < 1e-5
    assert relative < 1e-6 and ours_tokens == ref_tokens
