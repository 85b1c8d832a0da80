"""What the loop hands out: a Step per new token, and generate(..., output_scores=True)'s result."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Step:
    """One step of the loop, as stream() yields it. R rows: batch x num_return_sequences, or batch x num_beams."""

    tokens: torch.Tensor  # [R] the token appended to each row (pad_token_id for finished rows)
    logits: torch.Tensor  # [R, V] the model's next-token scores
    scores: torch.Tensor  # [R, V] the scores the token was picked from: after the processors (and warpers)
    logprobs: torch.Tensor  # [R] each appended token's log-probability under softmax(scores)
    sequences: torch.Tensor  # [R, T + n] every row so far, prompt included
    finished: torch.Tensor  # [R] rows that are done (eos, a stop string); beams: their prompt's search is
    beam_scores: torch.Tensor | None = None  # beam search: each running beam's summed log-probability
    parents: torch.Tensor | None = None  # beam search: the row of the last step that each row continues
    drafted: int | None = None  # assisted decoding, on a round's first step: the tokens drafted for it
    accepted: int | None = None  # ... and how many of them the model kept (the round adds accepted + 1)


@dataclass
class GenerateOutput:
    """What generate(..., output_scores=True) returns."""

    sequences: torch.Tensor  # [R, T + n], as generate() returns without output_scores
    scores: tuple[torch.Tensor, ...]  # each step's processed scores: [rows, V] (beams: the running beams)
    token_logprobs: torch.Tensor | None = None  # [R, n] greedy and sampling: each new token's log-probability
    sequences_scores: torch.Tensor | None = None  # [R] beam search: each returned beam's length-penalised score
