"""Probes a run takes besides the loss, each into the log row of the steps it runs on:

    --track N            every N steps (and at the last), on a fixed induction probe (a seeded random
                         sequence repeated twice): each head's induction and previous-token score (heads.py),
                         its attention entropy, and the residual stream's norm by layer
    --eval-choices FILE  at every val loss: the accuracy on multiple-choice questions (scoring.py)

A probe runs the model in eval() without gradients and puts it back as it was. It draws no random numbers
(the probe's tokens come from a generator of their own), so a tracked run resumes bit for bit.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..interp.heads import detection_pattern, induction_stripe, pattern_scores, repeated_random_tokens
from ..interp.internals import run_with_cache
from ..scoring import choice_rows, multiple_choice, parse_choices
from .data import read_text

PROBE_LENGTH, PROBE_BATCH = 50, 10  # the induction demos' random sequence (heads.induction_scores), or what fits


@contextlib.contextmanager
def evaluating(model):
    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(training)


class HeadTracker:
    """The induction probe: `tracker(model)` gives the row's fields,
    {"track": {"induction": [L][H], "previous_token": [L][H], "entropy": [L][H], "resid_norm": [L + 1]},
    "induction_max": ..., "previous_token_max": ...}."""

    def __init__(self, every: int, vocab_size: int, block_size: int, seed: int):
        half = min(PROBE_LENGTH, block_size // 2)
        if half < 2:
            raise ValueError(
                f"--track probes a sequence repeated twice: give a --block-size of 4 or more, not {block_size}"
            )
        self.every = every
        self.tokens = repeated_random_tokens(vocab_size, half, PROBE_BATCH, seed=seed)  # [B, 2 * half]

    def scores(self, model) -> dict[str, torch.Tensor]:
        """Tensors: induction, previous_token, entropy [n_layer, n_head]; resid_norm [n_layer + 1]."""
        names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.config.n_layer)]
        streams = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layer)]
        with evaluating(model):
            _, acts = run_with_cache(model, self.tokens.to(model.wte.weight.device), names + streams)
        patterns = torch.stack([acts[n] for n in names]).float().cpu()  # [L, B, H, T, T]
        T = self.tokens.size(1)
        previous = detection_pattern("previous_token", self.tokens[0])
        return {
            "induction": induction_stripe(patterns, T // 2),
            "previous_token": pattern_scores(patterns, previous).mean(dim=1),  # head_scores, averaged over the rows
            "entropy": torch.special.entr(patterns).sum(dim=-1).mean(dim=(1, 3)),  # nats, over the queries
            "resid_norm": torch.stack([acts[n].float().norm(dim=-1).mean() for n in streams]).cpu(),
        }

    def __call__(self, model) -> dict:
        scores = self.scores(model)
        # Rounded in float64, so that the log reads 0.1234, not float32's 0.1234000027179718.
        return {
            "track": {name: value.double().round(decimals=4).tolist() for name, value in scores.items()},
            "induction_max": scores["induction"].max().item(),
            "previous_token_max": scores["previous_token"].max().item(),
        }


class ChoiceEval:
    """--eval-choices: `choices(model)` gives {"choice_accuracy": acc, "choice_accuracy_norm": acc_norm}."""

    def __init__(self, path: str, every: int, tokenizer, n_positions: int):
        self.every, self.tokenizer = every, tokenizer
        self.examples = parse_choices(read_text(Path(path)), path)
        for n, example in enumerate(self.examples):  # refused now, not steps into the run
            try:
                choice_rows(tokenizer, example, n_positions)
            except ValueError as e:
                raise ValueError(f"{path}: example {n}: {e}; shorten it or leave it out") from None

    def __call__(self, model) -> dict:
        with evaluating(model):
            result = multiple_choice(model, self.tokenizer, self.examples)
        return {"choice_accuracy": result.acc, "choice_accuracy_norm": result.acc_norm}


def probes(config, tokenizer, model_config, block_size: int) -> list:
    """The probes the run's config asks for; each has `every` (steps) and gives fields for the row."""
    found = []
    if config.track_every:
        found.append(HeadTracker(config.track_every, model_config.vocab_size, block_size, config.seed))
    if config.eval_choices:
        found.append(ChoiceEval(config.eval_choices, config.eval_every, tokenizer, model_config.n_positions))
    return found
