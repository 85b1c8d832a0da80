"""Head detectors: how much each head's attention looks like a known pattern, per layer x head, as
TransformerLens's detect_head and its demos' induction score compute it.

    scores = head_scores(model, tokens, "previous_token")   # [n_layer, n_head]
    scores = induction_scores(model, seq_len=50)              # on a random sequence repeated twice

Patterns (for a sequence t, query q, key k): a previous-token head attends from q to q-1; a
duplicate-token head to every earlier k with t[k] == t[q]; an induction head to every k whose
previous token is t[q] (the token after an earlier copy of the current one).
"""

from __future__ import annotations

import torch

from .internals import attention_patterns

KINDS = ("previous_token", "duplicate_token", "induction")


def detection_pattern(kind: str, tokens: torch.Tensor) -> torch.Tensor:
    """The ideal pattern [T, T] of one kind of head on tokens [T] (1 where it should attend, lower-triangular)."""
    T = tokens.numel()
    if kind == "previous_token":
        return torch.ones(T, T).tril(-1).triu(-1)
    same = (tokens[:, None] == tokens[None, :]).float().tril(-1)  # [q, k]: an earlier copy of the query's token
    if kind == "duplicate_token":
        return same
    if kind == "induction":
        return torch.cat([torch.zeros(T, 1), same[:, :-1]], dim=1).tril()  # k attends if t[k-1] is t[q]
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


@torch.inference_mode()
def head_scores(
    model,
    tokens: torch.Tensor,
    pattern: str | torch.Tensor,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
) -> torch.Tensor:
    """Each head's score [n_layer, n_head] on one sequence tokens [T] (or [1, T]), as detect_head scores it.

    pattern: a kind (KINDS) or an ideal pattern [T, T]. error_measure "mul": the share of the head's
    attention that falls where the pattern is 1; "abs": 1 - the mean absolute difference per query
    (rounded to 3 decimals, as TransformerLens does). exclude_bos / exclude_current_token leave the first
    key / the diagonal out of the head's attention first."""
    if tokens.dim() > 2 or (tokens.dim() == 2 and tokens.size(0) != 1):  # a batch would run as one long sequence
        raise ValueError(f"head scores take one sequence, [T] or [1, T], got {list(tokens.shape)}; score each row")
    tokens = tokens.reshape(-1)
    T = tokens.numel()
    if not 1 < T <= model.config.n_positions:
        raise ValueError(f"head scores need 2 to {model.config.n_positions} tokens, got {T}")
    ideal = detection_pattern(pattern, tokens) if isinstance(pattern, str) else pattern.float()
    if ideal.shape != (T, T):
        raise ValueError(f"a detection pattern must be [{T}, {T}] for {T} tokens, got {list(ideal.shape)}")
    if error_measure not in ("mul", "abs"):
        raise ValueError(f"error_measure must be 'mul' or 'abs', got {error_measure!r}")
    patterns = attention_patterns(model, tokens[None].to(model.wte.weight.device))[:, 0].float().cpu()  # [L, H, T, T]
    return pattern_scores(patterns, ideal, exclude_bos, exclude_current_token, error_measure)


def pattern_scores(
    patterns: torch.Tensor, ideal: torch.Tensor, exclude_bos=False, exclude_current_token=False, error_measure="mul"
) -> torch.Tensor:
    """head_scores of attention patterns already computed: [..., T, T] against ideal [T, T] -> [...]."""
    T = ideal.size(0)
    keep = torch.ones(T, T)
    if exclude_bos:
        keep[:, 0] = 0
    if exclude_current_token:
        keep.fill_diagonal_(0)
    if error_measure == "mul":
        attention = patterns * keep
        return (attention * ideal).sum(dim=(-2, -1)) / attention.sum(dim=(-2, -1))
    error = (patterns - ideal).abs() * keep
    return 1 - torch.round(error.sum(dim=(-2, -1)) / T, decimals=3)


def repeated_random_tokens(vocab_size: int, seq_len: int, batch: int = 1, *, seed: int = 0, bos: int | None = None):
    """[batch, 2 * seq_len] (+1 with a bos first): a random sequence, then the same again, as TransformerLens's
    induction demos draw it (ids from the vocabulary's middle, away from special tokens)."""
    generator = torch.Generator().manual_seed(seed)
    low, high = min(100, vocab_size // 10), max(min(20000, vocab_size - 1), min(100, vocab_size // 10) + 1)
    half = torch.randint(low, high, (batch, seq_len), generator=generator)
    tokens = torch.cat([half, half], dim=1)
    if bos is not None:
        tokens = torch.cat([torch.full((batch, 1), bos), tokens], dim=1)
    return tokens


@torch.inference_mode()
def induction_scores(
    model, tokens: torch.Tensor | None = None, *, seq_len: int = 50, batch: int = 10, seed: int = 0
) -> torch.Tensor:
    """The demos' induction score [n_layer, n_head]: on a sequence repeated twice (tokens [B, 2L], or
    [B, 2L + 1] with a bos first; default: repeated_random_tokens of seq_len), the mean attention from each
    query of the second copy (and the first copy's last) to the token after its earlier copy, the diagonal
    L - 1 below the main one; averaged over the batch."""
    if tokens is None:
        tokens = repeated_random_tokens(model.config.vocab_size, seq_len, batch, seed=seed)
    half = tokens.size(1) // 2
    if not torch.equal(tokens[:, -half:], tokens[:, -2 * half : -half]):
        raise ValueError("induction scores need a sequence repeated twice (after an optional bos)")
    patterns = attention_patterns(model, tokens.to(model.wte.weight.device)).float().cpu()  # [L, B, H, T, T]
    return induction_stripe(patterns, half)


def induction_stripe(patterns: torch.Tensor, half: int) -> torch.Tensor:
    """induction_scores of attention patterns already computed: [L, B, H, T, T] on sequences whose second
    copy is their last `half` tokens -> [L, H]."""
    return patterns.diagonal(offset=1 - half, dim1=-2, dim2=-1).mean(dim=(1, 3))  # the stripe [L, B, H, entries]
