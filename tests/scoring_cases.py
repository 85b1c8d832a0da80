"""What the scoring tests share (tests/test_scoring.py, tests/test_model_loss.py, tests/cli/test_scoring_commands.py):
the tolerances, a seeded long text, padded batches, and each figure worked out from transformers' logits."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from minigpt2.testing.checkpoints import SAMPLE_TEXTS

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
