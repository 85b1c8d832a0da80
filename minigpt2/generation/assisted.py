"""Assisted decoding: draft a few tokens cheaply, check them all in one forward pass of the model, keep the
ones it agrees with, and add its own next token: generate(..., assistant_model=draft) or
generate(..., prompt_lookup_num_tokens=n).

At batch 1 a decode step reads every weight once; where that read is the cost, a forward pass over k + 1
tokens costs little more than over one, and each accepted draft is a token almost for free. Where compute
is short, as on a 2-core CPU, a wide pass costs more (scripts/benchmark.py --sections assisted measures
it). Greedy output is the plain greedy output (up to the rounding of a k + 1-token forward pass against
one-token steps); sampling keeps the model's distribution by speculative sampling's rule (accept a draft
x with probability min(1, p(x)/q(x)), else draw from max(p - q, 0), normalised). Drafts come from:

  ModelDraft    a smaller GPT-2 with the same tokenizer (distilgpt2 or gpt2 for gpt2-medium and up), with a
                KV cache of its own, rolled back with the model's on a rejection;
  LookupDraft   the sequence itself: what followed the earliest earlier copy of its last n-gram, n from
                max_matching_ngram_size (2) down to 1, as transformers' prompt lookup has it.

Batch 1 only, as in transformers. The processors apply to the model's scores at every position, and to a
draft model's; the stop conditions (eos, stop strings, max_time) are checked after every token.
"""

from __future__ import annotations

import statistics
import time

import torch

from ..hooks import during_generation
from . import stopping
from .processors import Sampler
from .steps import Step


class ModelDraft:
    """Drafts with a small GPT-2: greedy, or sampled from its own processed and warped scores."""

    def __init__(self, assistant, config, total: int, process, sampler: Sampler | None):
        if assistant.config.vocab_size < 1:
            raise ValueError("the assistant model has no vocabulary")
        self.model, self.process, self.sampler = assistant, process, sampler
        self.tokens, self.schedule = config.num_assistant_tokens, config.num_assistant_tokens_schedule
        self.threshold = config.assistant_confidence_threshold
        self.cache = assistant.new_cache(1, total)
        self.probs: list[torch.Tensor] = []  # sampling: each draft's distribution q, for the acceptance test

    def propose(self, sequence: torch.Tensor, budget: int) -> list[int]:
        drafts, self.probs = [], []
        for _ in range(min(self.tokens, budget)):
            fed = sequence[:, self.cache.length :]
            scores = self.model(fed, self.cache)[:, -1].float()
            scores = self.process(sequence, scores) if self.process else scores
            if self.sampler is None:
                token = int(scores.argmax(dim=-1))
                confidence = scores.softmax(dim=-1)[0, token].item()
            else:
                probs = self.sampler.warp(scores).softmax(dim=-1)
                token = int(self.sampler.draw(probs))
                self.probs.append(probs[0])
                confidence = probs[0, token].item()
            drafts.append(token)
            sequence = torch.cat([sequence, sequence.new_tensor([[token]])], dim=1)
            if confidence < self.threshold:  # the draft model is unsure: the model decides from here
                break
        return drafts

    def accepted(self, kept: int, drafted: int, length: int) -> None:
        """The model kept `kept` of `drafted` drafts; the sequence has `length` tokens before the model's own."""
        self.cache.rollback(min(self.cache.length, length))
        if self.schedule == "heuristic":
            self.tokens = self.tokens + 2 if kept == drafted else max(1, self.tokens - 1)


class LookupDraft:
    """Drafts the tokens that followed the earliest earlier occurrence of the sequence's last n tokens."""

    def __init__(self, config):
        self.tokens, self.ngram = config.prompt_lookup_num_tokens, config.max_matching_ngram_size or 2
        self.probs: list[torch.Tensor] = []  # no draft distribution: a sampled check draws from the model

    def propose(self, sequence: torch.Tensor, budget: int) -> list[int]:
        row, count = sequence[0], min(self.tokens, budget)
        if count < 1:
            return []
        for n in range(min(self.ngram, row.numel() - 1), 0, -1):
            # every earlier window of n tokens against the last n, at once; the tail's own window excluded
            matches = (row.unfold(0, n, 1)[:-1] == row[-n:]).all(dim=1).nonzero()
            if len(matches):
                start = int(matches[0]) + n  # the earliest match: what followed it
                return row[start : start + count].tolist()
        return []

    def accepted(self, kept: int, drafted: int, length: int) -> None:
        pass


@torch.inference_mode()
def assisted_loop(model, run, draft, sampler: Sampler | None, hooks=None):
    """The loop of generation/__init__.py, a round at a time: a Step per new token, the first of each round
    saying how many tokens were drafted and accepted; returns (sequences, None)."""
    out, T, cache, config = run.out, run.prompt_length, run.cache, run.config
    eos = torch.tensor(config.eos_ids, device=out.device)
    hooks = during_generation(hooks, T) if hooks else None
    finished = torch.zeros(1, dtype=torch.bool, device=out.device)
    i, total = T, out.size(1)
    while i < total:
        drafts = draft.propose(out[:, :i], total - i - 1)  # room for the model's own token after them
        d = len(drafts)
        out[0, i : i + d] = torch.tensor(drafts, dtype=out.dtype)
        logits = model(out[:, cache.length : i + d], cache, hooks=hooks)[0, -(d + 1) :].float()  # [d + 1, V]
        kept, tokens, raw, scores = _check(run, draft, sampler, out, i, drafts, logits)
        cache.rollback(i + kept)  # the model's own token goes in with the next round
        draft.accepted(kept, d, i + kept)
        picked = torch.tensor(tokens, device=out.device)
        logprobs = scores.log_softmax(dim=-1).gather(1, picked[:, None])  # [n, 1]: each token's, in one call
        for j, token in enumerate(tokens):
            out[0, i + j] = token
            if eos.numel():
                finished |= torch.isin(out[:, i + j], eos)
            if run.stops:
                finished |= stopping.any_met(run.stops, out[:, : i + j + 1], run.padding)
            first = j == 0
            yield Step(
                out[:, i + j], raw[j, None], scores[j, None], logprobs[j], out[:, : i + j + 1], finished.clone(),
                drafted=d if first else None, accepted=kept if first else None,
            )  # fmt: skip
            if bool(finished.all()):
                return out[:, : i + j + 1], None
        i += len(tokens)
    return out, None


def _check(run, draft, sampler, out, i, drafts, logits):
    """Which drafts the model keeps, and its own next token: (kept, the tokens to append, their logits and
    scores [kept + 1, V]). logits [d + 1, V]: the model's at each draft's position and after the last."""
    if sampler is None and run.process is None:  # plain greedy: every position's pick in one call
        picks = logits.argmax(dim=-1).tolist()
        kept = next((j for j, (pick, token) in enumerate(zip(picks, drafts)) if pick != token), len(drafts))
        return kept, picks[: kept + 1], logits[: kept + 1], logits[: kept + 1]
    tokens, scored = [], []  # the processors read each position's own prefix: one position at a time
    for j in range(len(drafts) + 1):
        raw = logits[j]
        scores = run.process(out[:, : i + j], raw[None])[0] if run.process else raw
        if sampler is None:
            token = int(scores.argmax())
        else:
            scores = sampler.warp(scores[None])[0]
            token = _speculative(sampler, scores, drafts, draft.probs, j)
        tokens.append(token)
        scored.append(scores)
        if j == len(drafts) or token != drafts[j]:
            return j, tokens, logits[: j + 1], torch.stack(scored)
    raise AssertionError("unreachable: the last position always returns")


def _speculative(sampler: Sampler, scores, drafts, draft_probs, j: int) -> int:
    """The token at draft position j under speculative sampling: the draft if the test accepts it, else a
    draw from the residual max(p - q, 0); past the drafts (or with no draft distribution), a draw from p."""
    p = scores.softmax(dim=-1)
    if j == len(drafts):
        return int(sampler.draw(p[None]))
    if not draft_probs:  # prompt lookup: draw from p; the draft is kept only if the draw is the draft
        return int(sampler.draw(p[None]))
    q, x = draft_probs[j], drafts[j]
    if sampler.uniform() < min(1.0, (p[x] / q[x]).item()):
        return x
    residual = (p - q).clamp(min=0)
    return int(sampler.draw((residual / residual.sum())[None]))


def pass_cost(model, tokens: int, rounds: int = 3, prefill: int = 16) -> float:
    """Seconds of one cached forward pass of `tokens` new tokens after a short prefill, the median of
    `rounds`: what checking drafts costs on the model at hand, on this machine (the CLI's summary weighs
    a round's tokens against it)."""
    device = model.wte.weight.device
    cache = model.new_cache(1, prefill + tokens)
    new = torch.zeros(1, tokens, dtype=torch.long, device=device)
    times = []
    with torch.inference_mode():
        model(torch.zeros(1, prefill, dtype=torch.long, device=device), cache)
        for _ in range(rounds + 1):  # the first warms the kernels
            cache.rollback(prefill)
            start = time.perf_counter()
            model(new, cache)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])
