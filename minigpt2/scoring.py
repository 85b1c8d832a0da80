"""Scoring text, as GPT-2 is judged: each token's log-probability, a continuation's log-likelihood (as
lm-eval defines it), the perplexity of a long text through a sliding window (as transformers' guide
defines it), and multiple-choice accuracy (as build-nanogpt scores HellaSwag).

    logprobs = model.score(input_ids, attention_mask)      # [B, T-1]: log p(token t | tokens before t)
    result = perplexity(model, tokenizer.encode(text), stride=512, text=text)
    result.perplexity, result.tokens, result.nll_sum        # exp(nll_sum / tokens)
    result.bits_per_byte, result.word_perplexity            # from text= (None without it)

Every log-probability is a log-softmax of fp32 logits, whatever the weights' dtype, as transformers'
loss is; sums are kept in float64.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch


@torch.inference_mode()
def score(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each token's log-probability given the tokens before it: [B, T-1], entry t-1 for token t.

    attention_mask [B, T] (1 real, 0 padding) takes left- or right-padded batches. An entry is 0 where its
    token is padding, or where the token before it is (a left-padded row's first real token, which has
    nothing real to be predicted from, as an unpadded row's first token has no entry): so a padded row's
    entries are the row's own, and a row's sum is its log-likelihood."""
    logits = model(input_ids, attention_mask=attention_mask)
    logprobs = _logprobs(logits[:, :-1], input_ids[:, 1:])
    if attention_mask is not None:
        real = attention_mask.bool()
        logprobs = logprobs.masked_fill(~(real[:, 1:] & real[:, :-1]), 0.0)
    return logprobs


def _logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target], in fp32: logits [..., V], targets [...]."""
    return logits.float().log_softmax(dim=-1).gather(-1, targets[..., None])[..., 0]


@torch.inference_mode()
def loglikelihood(
    model,
    requests: Sequence[tuple[list[int], list[int]]],
    *,
    batch_size: int = 8,
    context: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[tuple[float, bool]]:
    """For each (context ids, continuation ids): log p(continuation | context), and whether the continuation
    is what greedy decoding would pick token by token, as lm-eval's loglikelihood defines both. The two
    joined are cut to the last `context` (default: n_positions) + 1 tokens, and the last one is not fed; a
    continuation longer than `context` is refused. Batched, longest first, padded on the right.
    on_batch(requests scored so far, requests in all): called after each batch, e.g. for a progress bar."""
    context = context or model.config.n_positions
    rows = []
    for ctx, cont in requests:
        if not cont:
            raise ValueError("a continuation needs at least one token")
        if not ctx:
            raise ValueError("a context needs at least one token (GPT-2 starts from its eos token)")
        if len(cont) > context:
            raise ValueError(f"a continuation of {len(cont)} tokens does not fit the context ({context} tokens)")
        whole = (list(ctx) + list(cont))[-(context + 1) :]
        rows.append((whole[:-1], list(cont)))
    results: list[tuple[float, bool] | None] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    device = model.wte.weight.device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        T = len(rows[chunk[0]][0])
        ids = torch.zeros(len(chunk), T, dtype=torch.long)
        mask = torch.zeros(len(chunk), T, dtype=torch.long)
        for row, i in enumerate(chunk):
            fed = rows[i][0]
            ids[row, : len(fed)] = torch.tensor(fed)
            mask[row, : len(fed)] = 1
        logits = model(ids.to(device), attention_mask=None if bool(mask.all()) else mask.to(device))
        for row, i in enumerate(chunk):
            fed, cont = rows[i]
            n = len(cont)
            last = logits[row, len(fed) - n : len(fed)]  # [n, V]: the positions that predict the continuation
            target = torch.tensor(cont, device=device)
            logprob = _logprobs(last, target).double().sum().item()
            results[i] = (logprob, bool((last.argmax(dim=-1) == target).all()))
        if on_batch is not None:
            on_batch(start + len(chunk), len(rows))
    return results


@dataclass
class Perplexity:
    """A text's score: nll_sum (natural log) over `tokens` scored tokens; bytes and words of the text, for
    the units the GPT-2 paper and lm-eval use (None, and so bits_per_byte and word_perplexity, where
    perplexity() was given no text=)."""

    nll_sum: float
    tokens: int
    bytes: int | None = None
    words: int | None = None
    stride: int | None = None
    context: int | None = None

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_sum / self.tokens)

    @property
    def bits_per_byte(self) -> float | None:
        return self.nll_sum / self.bytes / math.log(2) if self.bytes else None

    @property
    def word_perplexity(self) -> float | None:
        return math.exp(self.nll_sum / self.words) if self.words else None

    def as_dict(self) -> dict:
        units = {"perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte}
        return {**self.__dict__, **units, "word_perplexity": self.word_perplexity}


def windows(length: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """The sliding window of transformers' perplexity guide: (begin, end, first scored position) for each
    window over `length` tokens. A window covers at most `context` tokens and starts `stride` after the
    last; it scores the tokens the windows before it did not, so each token from the second on is scored
    once, with as much context as its window gives it."""
    if not 0 < stride <= context:
        raise ValueError(f"the stride must be between 1 and the context ({context} tokens), got {stride}")
    spans, scored_until = [], 1  # the first token has nothing before it to be predicted from
    for begin in range(0, length, stride):
        end = min(begin + context, length)
        spans.append((begin, end, scored_until))
        scored_until = end
        if end == length:
            break
    return spans


@torch.inference_mode()
def perplexity(
    model,
    ids: Sequence[int] | torch.Tensor,
    *,
    stride: int = 512,
    context: int | None = None,
    batch_size: int = 1,
    text: str | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> Perplexity:
    """The perplexity of one long token sequence through a sliding window of `context` tokens (default:
    the model's n_positions) moved by `stride`, as transformers' guide computes it, but with every
    window's tokens counted exactly. batch_size: windows of the same length scored in one forward pass
    (the same sum, up to rounding). text: the text the ids encode, for bits per byte and word perplexity;
    without it both are None (ids without their tokenizer do not say how many bytes or words they spell).
    on_window(tokens scored so far, tokens in all): called after each batch, e.g. for a progress bar."""
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if ids.numel() < 2:
        raise ValueError(f"a perplexity needs at least 2 tokens, got {ids.numel()}")
    context = context or model.config.n_positions
    if context > model.config.n_positions:
        raise ValueError(f"the context ({context}) is longer than the model's ({model.config.n_positions} tokens)")
    spans = windows(ids.numel(), context, stride)
    device = model.wte.weight.device
    nll_sum, scored = 0.0, 0
    for batch in _batches(spans, batch_size):
        begin, end, _ = batch[0]
        rows = torch.stack([ids[b:e] for b, e, _ in batch]).to(device)  # [n, end - begin]
        logprobs = _logprobs(model(rows)[:, :-1], rows[:, 1:])  # [n, T-1]: position t predicts token t+1
        for row, (b, _, first) in enumerate(batch):
            counted = logprobs[row, max(first - b - 1, 0) :]  # the tokens from `first` on (entry j is token b + j + 1)
            nll_sum -= counted.double().sum().item()
            scored += counted.numel()
        if on_window is not None:
            on_window(scored, ids.numel() - 1)
    words = len(text.split()) if text is not None else None
    n_bytes = len(text.encode()) if text is not None else None
    return Perplexity(nll_sum, scored, n_bytes, words, stride, context)


def _batches(spans: list[tuple[int, int, int]], batch_size: int) -> Iterable[list[tuple[int, int, int]]]:
    """Runs of consecutive windows of the same length, at most batch_size each."""
    batch: list[tuple[int, int, int]] = []
    for span in spans:
        if batch and (len(batch) == batch_size or span[1] - span[0] != batch[0][1] - batch[0][0]):
            yield batch
            batch = []
        batch.append(span)
    if batch:
        yield batch


@dataclass
class Choices:
    """Multiple-choice results: per example, the sum and the average of each ending's token losses."""

    sum_losses: list[list[float]] = field(default_factory=list)
    avg_losses: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    @property
    def acc(self) -> float:
        """The ending with the lowest summed loss is the pick."""
        return _accuracy(self.sum_losses, self.labels)

    @property
    def acc_norm(self) -> float:
        """The ending with the lowest average loss per token is the pick."""
        return _accuracy(self.avg_losses, self.labels)


def _accuracy(losses: list[list[float]], labels: list[int]) -> float:
    right = sum(min(range(len(row)), key=row.__getitem__) == label for row, label in zip(losses, labels, strict=True))
    return right / len(labels) if labels else float("nan")


@torch.inference_mode()
def multiple_choice(
    model, tokenizer, examples: Iterable[dict], *, on_example: Callable[[int, int], None] | None = None
) -> Choices:
    """HellaSwag-style scoring as build-nanogpt does it: each ending (after a space) follows its context in
    one row per ending; an ending's loss is the cross-entropy of its tokens; acc picks the lowest sum,
    acc_norm the lowest average. examples: {"context" (or HellaSwag's "ctx"), "endings", "label"}.
    on_example(examples scored so far, examples in all): called after each, e.g. for a progress bar."""
    result = Choices()
    device = model.wte.weight.device
    examples = list(examples)
    for n, example in enumerate(examples):
        try:
            ctx, tails, label = choice_rows(tokenizer, example, model.config.n_positions)
        except ValueError as e:
            raise ValueError(f"example {n}: {e}") from None
        T = max(len(ctx) + len(tail) for tail in tails)
        rows = torch.zeros(len(tails), T, dtype=torch.long)
        for row, tail in enumerate(tails):
            rows[row, : len(ctx) + len(tail)] = torch.tensor(ctx + tail)
        losses = -_logprobs(model(rows.to(device))[:, :-1], rows[:, 1:].to(device))  # [endings, T-1]
        sums = [
            losses[row, len(ctx) - 1 : len(ctx) - 1 + len(tail)].double().sum().item() for row, tail in enumerate(tails)
        ]
        result.sum_losses.append(sums)
        result.avg_losses.append([s / len(tail) for s, tail in zip(sums, tails, strict=True)])
        result.labels.append(label)
        if on_example is not None:
            on_example(n + 1, len(examples))
    return result


def choice_rows(tokenizer, example: dict, n_positions: int) -> tuple[list[int], list[list[int]], int]:
    """An example's context ids, each ending's ids (after a space) and its label; a ValueError if it is
    malformed or longer than the context."""
    context, endings, label = parse_example(example)
    ctx = tokenizer.encode(context)
    tails = [tokenizer.encode(" " + ending) for ending in endings]
    T = max(len(ctx) + len(tail) for tail in tails)
    if T > n_positions:
        raise ValueError(f"{T} tokens, longer than the context ({n_positions})")
    return ctx, tails, label


def parse_choices(text: str, source) -> list[dict]:
    """The examples of a multiple-choice JSONL text (read from `source`, named in the errors), each checked."""
    examples = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}:{n} is not JSON ({e.msg})") from None
        if not isinstance(example, dict):
            raise ValueError(f"{source}:{n} is not a JSON object with context, endings and label")
        try:
            parse_example(example)
        except ValueError as e:
            raise ValueError(f"{source}:{n}: the example {e}") from None
        examples.append(example)
    return examples


def parse_example(example: dict) -> tuple[str, list[str], int]:
    """A multiple-choice example's (context, endings, label), or a ValueError that says what is missing."""
    context = example.get("context", example.get("ctx"))
    endings, label = example.get("endings"), example.get("label")
    if not isinstance(context, str):
        raise ValueError("needs a text 'context' (or HellaSwag's 'ctx')")
    if not isinstance(endings, list) or not endings:
        raise ValueError("needs a non-empty list of 'endings'")
    if not all(isinstance(e, str) and e for e in endings):
        raise ValueError("every ending must be a non-empty text")
    if isinstance(label, str) and label.isdigit():
        label = int(label)  # HellaSwag's own files write it as a string
    if not isinstance(label, int) or not 0 <= label < len(endings):
        raise ValueError(f"'label' must be the index of the right ending (0..{len(endings) - 1})")
    return context, endings, label


class ScoringMixin:
    score = score  # model.score(input_ids, attention_mask) -> [B, T-1] log-probabilities
