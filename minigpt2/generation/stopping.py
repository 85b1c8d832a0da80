"""Conditions that end rows early, besides eos: stop strings and a time limit, as transformers' criteria."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

Criterion = Callable[[torch.Tensor], torch.Tensor]  # sequences [R, t] -> [R] bool: the row is done


def criteria(
    *, stop_strings, tokenizer, max_time: float | None, padding: torch.Tensor, started: float
) -> list[Criterion]:
    """padding [R]: the left padding of each row, which is no part of its text."""
    chain = []
    if stop_strings is not None:
        chain.append(_stop_strings(stop_strings, tokenizer, padding))
    if max_time is not None:
        if not max_time > 0:
            raise ValueError(f"max_time must be above 0 seconds, got {max_time}")
        chain.append(lambda sequences: torch.full((sequences.size(0),), time.monotonic() - started > max_time))
    return chain


def any_met(chain: list[Criterion], sequences: torch.Tensor) -> torch.Tensor:
    done = torch.zeros(sequences.size(0), dtype=torch.bool)
    for criterion in chain:
        done |= criterion(sequences).cpu()
    return done.to(sequences.device)


def _stop_strings(stop_strings, tokenizer, padding: torch.Tensor) -> Criterion:
    """Done when the row's text ends in one of the strings, wherever the token boundaries fall."""
    stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
    if not stop_strings or not all(isinstance(s, str) and s for s in stop_strings):
        raise ValueError("stop_strings must be a non-empty string or a list of them")
    if tokenizer is None:
        raise ValueError("stop_strings needs the tokenizer to read the text: generate(..., tokenizer=tokenizer)")
    # Every token holds at least one byte, so the last (bytes + 1) tokens hold the whole string and one
    # token before it (a tokenizer that marks word starts drops the space of a text's first word only).
    window = max(len(s.encode()) for s in stop_strings) + 1
    padding = padding.tolist()

    def met(sequences):
        rows = sequences[:, -window:].tolist()
        starts = [max(0, pad - (sequences.size(1) - len(row))) for pad, row in zip(padding, rows, strict=True)]
        texts = [tokenizer.decode(row[start:]) for row, start in zip(rows, starts, strict=True)]
        return torch.tensor([text.endswith(tuple(stop_strings)) for text in texts])

    return met
