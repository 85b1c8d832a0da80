"""minigpt2/scoring.py, model(ids, labels=) and the scoring commands: each figure checked against the same one
worked out from transformers' GPT2LMHeadModel on the same checkpoint (the `reference` fixture), never against
numbers written here. Every comparison prints the difference it saw.

    loss       model(ids, labels=) == GPT2LMHeadModel(ids, labels=).loss (-100, padded batches, bf16 weights)
    score      model.score == log_softmax of transformers' logits at the next tokens (left and right padding),
               and == generate(..., output_scores=True).token_logprobs on the tokens it generated
    lm-eval    loglikelihood == the sum of the continuation's log-probabilities from transformers' logits
    perplexity the guide's sliding-window loop on transformers == the same loop on minigpt2; scoring.perplexity
               == the exact per-token sum over the same windows from transformers; batched == unbatched
    commands   minigpt2 perplexity and minigpt2 multiple-choice: their figures, --json, one-line errors
    published  the guide's and build-nanogpt's figures, when the official weights and data are cached (else skip)
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli

from minigpt2 import GPT2
from minigpt2.testing.checkpoints import SAMPLE_TEXTS
from minigpt2.parity.reference import guide_perplexity
from minigpt2.scoring import loglikelihood, multiple_choice, perplexity, windows

LOSS_TOLERANCE = 1e-5  # fp32 loss, and each token's log-probability, against transformers
SUM_TOLERANCE = 1e-4  # a sum of a few dozen fp32 log-probabilities (lm-eval's own tolerance for `hf` is wider)
RELATIVE = 1e-6  # perplexity NLL sums (float64 sums of fp32 log-probabilities over ~1500 tokens)


def long_text(words: int, seed: int = 0) -> str:
    """A text of `words` words drawn (seeded) from SAMPLE_TEXTS: varied enough that the tiny model's windows differ."""
    vocabulary = " ".join(SAMPLE_TEXTS).split()
    rng = random.Random(seed)
    lines = []
    while words > 0:
        n = min(words, rng.randint(5, 15))
        lines.append(" ".join(rng.choice(vocabulary) for _ in range(n)))
        words -= n
    return "\n".join(lines) + "\n"


def padded(rows: list[list[int]], side: str, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rows as one batch padded on `side` with `pad`: (input_ids [B, T], attention_mask [B, T])."""
    T = max(len(row) for row in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, row in enumerate(rows):
        where = slice(0, len(row)) if side == "right" else slice(T - len(row), T)
        ids[i, where], mask[i, where] = torch.tensor(row), 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """The position_ids transformers needs for a left-padded batch (it numbers positions 0..T-1 otherwise)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def reference_logprobs(reference, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T-1]: log_softmax of transformers' logits at each next token (left padding: with position_ids)."""
    extra = {} if mask is None else {"attention_mask": mask, "position_ids": positions(mask)}
    with torch.no_grad():
        logits = reference(ids, **extra).logits.float()
    return logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]


@pytest.fixture(scope="module")
def rows(tiny):
    """Token rows of different lengths (2 to ~60 tokens) of the tiny tokenizer."""
    _, tokenizer = tiny
    texts = [SAMPLE_TEXTS[0], "Hello there", SAMPLE_TEXTS[5], "a b"]
    return [tokenizer.encode(text) for text in texts]


@pytest.fixture(scope="module")
def long_ids(tiny):
    """~1500 tokens: a dozen windows of the tiny model's 128-token context, the last one shorter."""
    _, tokenizer = tiny
    text = long_text(700)
    ids = tokenizer.encode(text)
    assert len(ids) > 10 * tiny[0].config.n_positions, len(ids)
    return text, ids


# ---- loss: model(ids, labels=) ----


def test_loss_matches_transformers_with_ignored_labels(tiny, reference, rows):
    model, _ = tiny
    ids = torch.tensor([rows[0][:40], rows[2][:40]])
    labels = ids.clone()
    labels[0, :7] = -100  # a prompt not scored
    labels[1, torch.randperm(40, generator=torch.Generator().manual_seed(0))[:15]] = -100  # scattered
    out = model(ids, labels=labels)
    with torch.no_grad():
        expected = reference(ids, labels=labels)
    diff = (out.loss - expected.loss).abs().item()
    print(f"loss {out.loss.item():.6f} vs transformers {expected.loss.item():.6f}: diff {diff:.2e}")
    assert out.loss.dtype == torch.float32 and out.loss.shape == ()
    assert diff < LOSS_TOLERANCE
    loss, logits = out  # transformers' order
    assert torch.equal(logits, model(ids))  # the logits beside the loss are the plain call's
    assert isinstance(model(ids), torch.Tensor)  # model(ids) is still the logits: logits[0, -1] works
    unshifted = F.cross_entropy(logits[0].float(), ids[0])  # a loss that forgot the shift is far off
    assert (unshifted - loss).abs() > 100 * LOSS_TOLERANCE


def test_loss_right_padded_batch_matches_transformers(tiny, reference, rows):
    model, tokenizer = tiny
    ids, mask = padded(rows, "right", tokenizer.eos_token_id)
    labels = ids.masked_fill(mask == 0, -100)
    loss = model(ids, attention_mask=mask, labels=labels).loss
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, labels=labels).loss
    # the same mean, from the rows one at a time: each counted token once, padding never
    nll = torch.cat([-reference_logprobs(reference, torch.tensor([row]))[0] for row in rows])
    diff, diff_rows = (loss - expected).abs().item(), (loss - nll.mean()).abs().item()
    print(f"right-padded loss {loss.item():.6f}: diff to transformers {diff:.2e}, to the rows alone {diff_rows:.2e}")
    assert diff < LOSS_TOLERANCE and diff_rows < LOSS_TOLERANCE


def test_loss_left_padded_batch_equals_the_rows_alone(tiny, reference, rows):
    """Left padding: minigpt2 takes positions from the mask; transformers needs position_ids for that. A row's
    first real token follows padding, nothing real: its label is -100 too, as an unpadded row's first token
    is never predicted (labels that count it count a prediction made from padding, in both models)."""
    model, tokenizer = tiny
    ids, mask = padded(rows, "left", tokenizer.eos_token_id)
    after_real = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)  # the token before is real
    labels = ids.masked_fill((mask * after_real) == 0, -100)
    loss = model(ids, attention_mask=mask, labels=labels).loss
    nll = torch.cat([-reference_logprobs(reference, torch.tensor([row]))[0] for row in rows])
    with torch.no_grad():
        with_positions = reference(ids, attention_mask=mask, position_ids=positions(mask), labels=labels).loss
        without = reference(ids, attention_mask=mask, labels=labels).loss
    naive = model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    diff_rows, diff_ref = (loss - nll.mean()).abs().item(), (loss - with_positions).abs().item()
    print(
        f"left-padded loss {loss.item():.6f}: diff to the rows alone {diff_rows:.2e}, to transformers with "
        f"position_ids {diff_ref:.2e}; transformers without position_ids is off by {(loss - without).abs().item():.2e}; "
        f"labels counting the first real token are off by {(naive - nll.mean()).abs().item():.2e}"
    )
    assert diff_rows < LOSS_TOLERANCE and diff_ref < LOSS_TOLERANCE


def test_loss_of_bf16_weights_is_fp32(tiny_checkpoint, tiny, rows):
    model, _ = tiny
    bf16 = GPT2.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    ids = torch.tensor([rows[0][:40]])
    with torch.no_grad():
        out = bf16(ids, labels=ids)
        fp32 = model(ids, labels=ids).loss
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    in_fp32 = F.cross_entropy(out.logits[0, :-1].float(), ids[0, 1:])  # upcast first, as transformers' loss does
    in_bf16 = F.cross_entropy(out.logits[0, :-1], ids[0, 1:]).float()  # what skipping the upcast would give
    diff, to_fp32 = (out.loss - in_fp32).abs().item(), (out.loss - fp32).abs().item()
    print(
        f"bf16 weights: loss {out.loss.item():.6f}, diff to the fp32 cross-entropy of its logits {diff:.2e}, "
        f"to the fp32 model's {to_fp32:.2e}, bf16 cross-entropy off by {(out.loss - in_bf16).abs().item():.2e}"
    )
    assert diff < LOSS_TOLERANCE
    assert to_fp32 < 0.02 * fp32.item()  # bf16 weights round, but the loss is the same loss


def test_labels_of_another_shape_are_refused(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="labels must have input_ids' shape"):
        model(torch.zeros(1, 5, dtype=torch.long), labels=torch.zeros(1, 4, dtype=torch.long))


# ---- score: each token's log-probability ----


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


def exact_reference(reference, ids: list[int], context: int, stride: int):
    """The same windows, each token scored exactly once from transformers' logits: the first window that
    holds it with a token before it. (nll_sum, tokens, windows)."""
    nll, tokens, scored_until, n_windows = 0.0, 0, 1, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        n_windows += 1
        logprobs = reference_logprobs(reference, torch.tensor([ids[begin:end]]))[0]  # entry j: token begin + j + 1
        first = max(scored_until, begin + 1)
        nll -= logprobs[first - begin - 1 :].double().sum().item()
        tokens += end - first
        scored_until = end
        if end == len(ids):
            break
    return nll, tokens, n_windows


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


def examples_for(tokenizer) -> list[dict]:
    rng = random.Random(1)
    words = " ".join(SAMPLE_TEXTS[:3]).split()
    examples = []
    for n in range(5):
        endings = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(4)]
        examples.append({"context": " ".join(rng.choice(words) for _ in range(8)), "endings": endings, "label": n % 4})
    return examples


def reference_choices(reference, tokenizer, examples):
    """build-nanogpt's hellaswag.py on transformers' logits: per example, each ending's summed and average loss."""
    sums, avgs = [], []
    for example in examples:
        ctx_tokens = tokenizer.encode(example["context"])
        tok_rows, mask_rows = [], []
        for end in example["endings"]:
            end_tokens = tokenizer.encode(" " + end)
            tok_rows.append(ctx_tokens + end_tokens)
            mask_rows.append([0] * len(ctx_tokens) + [1] * len(end_tokens))
        max_len = max(len(row) for row in tok_rows)
        tokens = torch.zeros((4, max_len), dtype=torch.long)
        mask = torch.zeros((4, max_len), dtype=torch.long)
        for i, (tok_row, mask_row) in enumerate(zip(tok_rows, mask_rows)):
            tokens[i, : len(tok_row)] = torch.tensor(tok_row)
            mask[i, : len(mask_row)] = torch.tensor(mask_row)
        with torch.no_grad():
            logits = reference(tokens).logits
        shift_logits = logits[..., :-1, :].contiguous()
        shift_tokens = tokens[..., 1:].contiguous()
        flat_shift_logits = shift_logits.view(-1, shift_logits.size(-1))
        flat_shift_tokens = shift_tokens.view(-1)
        shift_losses = F.cross_entropy(flat_shift_logits, flat_shift_tokens, reduction="none")
        shift_losses = shift_losses.view(tokens.size(0), -1)
        shift_mask = mask[..., 1:].contiguous()
        masked_shift_losses = shift_losses * shift_mask
        sum_loss = masked_shift_losses.sum(dim=1)
        avg_loss = sum_loss / shift_mask.sum(dim=1)
        sums.append(sum_loss.tolist())
        avgs.append(avg_loss.tolist())
    return sums, avgs


def accuracy(losses, labels):
    return sum(min(range(len(row)), key=row.__getitem__) == label for row, label in zip(losses, labels)) / len(labels)


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


def one_line_error(result, *fragments):
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_perplexity_command(tmp_path, tiny_checkpoint, tiny, reference):
    _, tokenizer = tiny
    text = long_text(150, seed=2).replace("\n", "\r\n", 3)  # the file's own bytes are scored, CRLF and all
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    ids = tokenizer.encode(text)
    nll, tokens, _ = exact_reference(reference, ids, 128, 32)
    figures = tmp_path / "figures.json"
    args = ("perplexity", str(path), "--model", str(tiny_checkpoint), "--stride", "32")
    result = run_cli(*args, "--json", str(figures))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    got = json.loads(figures.read_text())
    expected = {
        "perplexity": math.exp(nll / tokens),
        "nll_sum": nll,
        "bits_per_byte": nll / len(text.encode()) / math.log(2),
        "word_perplexity": math.exp(nll / len(text.split())),
    }
    diffs = {name: abs(got[name] - value) / value for name, value in expected.items()}
    print(f"minigpt2 perplexity: {got['perplexity']:.6f} over {got['tokens']} tokens; relative diffs {diffs}")
    assert got["tokens"] == tokens and max(diffs.values()) < RELATIVE
    for figure in (
        f"{got['perplexity']:.4f}",
        f"{got['tokens']} tokens",
        f"{got['nll_sum']:.4f}",
        f"bits per byte {got['bits_per_byte']:.4f}",
        f"word perplexity {got['word_perplexity']:.4f}",
    ):
        assert figure in result.stdout, (figure, result.stdout)
    alone = run_cli(*args, "--json", "-", "--batch-size", "4")  # only the JSON, on stdout; batched the same
    assert alone.returncode == 0, alone.stderr
    batched = json.loads(alone.stdout)
    assert batched["tokens"] == tokens and math.isclose(batched["nll_sum"], nll, rel_tol=RELATIVE)


def test_perplexity_command_errors(tmp_path, tiny_checkpoint):
    model = ("--model", str(tiny_checkpoint))
    missing = tmp_path / "missing.txt"
    one_line_error(run_cli("perplexity", str(missing), *model), str(missing), "no such file")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one_line_error(run_cli("perplexity", str(empty), *model), "empty")
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\n")
    one_line_error(run_cli("perplexity", str(blank), *model), "empty")
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("café naïve".encode("latin-1"))
    one_line_error(run_cli("perplexity", str(binary), *model), "not UTF-8")
    text = tmp_path / "text.txt"
    text.write_text(long_text(20))
    one_line_error(run_cli("perplexity", str(text), *model, "--stride", "129"), "--stride 129", "128")
    for bad in ("0", "-3", "x"):
        one_line_error(run_cli("perplexity", str(text), *model, "--stride", bad), "--stride")
    one_line_error(run_cli("perplexity", str(text), "--model", str(tmp_path / "nowhere")), "nowhere")
    short = tmp_path / "short.txt"
    short.write_text("a")  # one token: nothing to predict
    one_line_error(run_cli("perplexity", str(short), *model), "at least 2 tokens")


def test_multiple_choice_command(tmp_path, tiny_checkpoint, tiny, reference):
    _, tokenizer = tiny
    examples = examples_for(tokenizer)
    examples[1] = {"ctx": examples[1]["context"], "endings": examples[1]["endings"], "label": "1"}  # HellaSwag's
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(json.dumps(example) for example in examples) + "\n\n")
    result = run_cli("multiple-choice", str(path), "--model", str(tiny_checkpoint), "--json", "-")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    for example in examples:
        example["context"], example["label"] = example.get("context", example.get("ctx")), int(example["label"])
    sums, avgs = reference_choices(reference, tokenizer, examples)
    labels = [example["label"] for example in examples]
    diff = max(
        abs(a - b)
        for got_rows, ref in ((got["sum_losses"], sums), (got["avg_losses"], avgs))
        for row_a, row_b in zip(got_rows, ref, strict=True)
        for a, b in zip(row_a, row_b, strict=True)
    )
    print(f"minigpt2 multiple-choice: acc {got['acc']}, acc_norm {got['acc_norm']}, max loss diff {diff:.2e}")
    assert got["examples"] == len(examples) and diff < SUM_TOLERANCE
    assert (got["acc"], got["acc_norm"]) == (accuracy(sums, labels), accuracy(avgs, labels))
    summary = run_cli("multiple-choice", str(path), "--model", str(tiny_checkpoint))
    assert f"acc {got['acc']:.4f}, acc_norm {got['acc_norm']:.4f} over {len(examples)}" in summary.stdout


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"context": "a", "endings": [], "label": 0}', "endings"),
        ('{"context": "a", "endings": ["b", ""], "label": 0}', "ending"),
        ('{"context": "a", "endings": ["b", "c"], "label": 2}', "label"),
        ('{"endings": ["b", "c"], "label": 0}', "context"),
    ],
)
def test_multiple_choice_command_names_the_bad_line(tmp_path, tiny_checkpoint, line, fragment):
    good = json.dumps({"context": "Once upon a time", "endings": ["there", "here"], "label": 0})
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join([good, "", line, good]) + "\n")
    one_line_error(run_cli("multiple-choice", str(path), "--model", str(tiny_checkpoint)), f"{path}:3", fragment)


def test_multiple_choice_command_errors(tmp_path, tiny_checkpoint):
    missing = tmp_path / "missing.jsonl"
    one_line_error(run_cli("multiple-choice", str(missing), "--model", str(tiny_checkpoint)), "no such file")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    one_line_error(run_cli("multiple-choice", str(empty), "--model", str(tiny_checkpoint)), "empty")


@pytest.mark.slow
def test_gpt2_medium_shape_loss_and_guide_perplexity(medium_checkpoint):
    """At gpt2-medium's shape and context: the loss of a padded batch with ignored labels, and the guide's
    loop at stride 512 over 1536 tokens (two full 1024-token windows), on minigpt2 and on transformers."""
    from transformers import GPT2LMHeadModel

    model, reference = GPT2.from_pretrained(medium_checkpoint), GPT2LMHeadModel.from_pretrained(medium_checkpoint)
    reference.eval()
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
    long = torch.randint(0, model.config.vocab_size - 1, (1536,), generator=generator).tolist()
    ours_nll, ours_tokens = guide_perplexity(model, long, 1024, 512)
    ref_nll, ref_tokens = guide_perplexity(reference, long, 1024, 512)
    relative = abs(ours_nll - ref_nll) / ref_nll
    print(
        f"gpt2-medium shape: loss diff {abs(ours - theirs).item():.2e}; guide loop at stride 512: NLL sum "
        f"{ours_nll:.4f} vs {ref_nll:.4f} (relative {relative:.2e}), {ours_tokens} vs {ref_tokens} tokens"
    )
    assert abs(ours - theirs).item() < 1e-5
    assert relative < 1e-6 and ours_tokens == ref_tokens
