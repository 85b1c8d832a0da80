"""Conditions that end rows early, besides eos: stop strings and a time limit, as transformers' criteria."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .config import GenerationConfig

# (sequences [R, t], padding [R]: each row's left padding, no part of its text) -> [R] bool: the row is done
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def criteria(config: GenerationConfig, tokenizer, started: float) -> list[Criterion]:
    chain = []
    if config.stop_strings is not None:
        chain.append(_stop_strings(config.stop_strings, tokenizer))
    if config.max_time is not None:
        limit = config.max_time
        chain.append(lambda sequences, _: torch.full((sequences.size(0),), time.monotonic() - started > limit))
    return chain


def any_met(chain: list[Criterion], sequences: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    done = torch.zeros(sequences.size(0), dtype=torch.bool)
    for criterion in chain:
        done |= criterion(sequences, padding).cpu()
    return done.to(sequences.device)


def _stop_strings(stop_strings, tokenizer) -> Criterion:
    """Done when one of the strings appears in the row's text and reaches into its last token: it may
    start tokens earlier and end partway into the last one, as transformers' StopStringCriteria has it."""
    if tokenizer is None:
        raise ValueError("stop_strings needs the tokenizer to read the text: generate(..., tokenizer=tokenizer)")
    # Every token holds at least one byte, so the last (bytes + 1) tokens hold the whole string and one
    # token before it (a tokenizer that marks word starts drops the space of a text's first word only).
    window = max(len(s.encode()) for s in stop_strings) + 1

    def reaches_last_token(row: list[int]) -> bool:
        text, before = tokenizer.decode(row), len(tokenizer.decode(row[:-1]))
        return any(text.find(s, max(0, before - len(s) + 1)) != -1 for s in stop_strings)

    def met(sequences, padding):
        t, rows = sequences.size(1), sequences[:, -window:].tolist()
        starts = [max(0, pad - (t - len(row))) for pad, row in zip(padding.tolist(), rows, strict=True)]
        return torch.tensor([reaches_last_token(row[start:]) for row, start in zip(rows, starts, strict=True)])

    return met
