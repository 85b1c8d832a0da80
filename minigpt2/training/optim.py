"""The optimizer and its schedule, as nanoGPT's train.py has them: AdamW that decays only the matrices and
embeddings, a learning rate that warms up and then decays, gradient accumulation, and clipping."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("cosine", "linear", "constant")


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: the >= 2-D weights (matrices, embeddings) decayed, biases and LayerNorms not.
    parameters() yields a weight shared by two modules once, so the tied wte/lm_head is one entry."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def adamw(model: torch.nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over decay_groups, with torch's fused kernel where the parameters' device has one."""
    groups = decay_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except RuntimeError:  # torch refuses fused=True on a device without the kernel
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


@dataclass(frozen=True)
class Schedule:
    """The learning rate at each step (counted from 0): linear warmup over `warmup` steps, then down to min_lr
    at `steps` along a cosine (nanoGPT's get_lr) or a line, or held (constant)."""

    lr: float
    min_lr: float
    warmup: int
    steps: int
    kind: str = "cosine"

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return self.lr
        if step >= self.steps:  # also every step after a warmup as long as the run
            return self.min_lr
        progress = (step - self.warmup) / (self.steps - self.warmup)
        coeff = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress
        return self.min_lr + coeff * (self.lr - self.min_lr)


def micro_steps(tokens_per_step: int | None, batch_size: int, block_size: int) -> int:
    """How many micro-batches of batch_size x block_size tokens make one optimizer step."""
    per_batch = batch_size * block_size
    if tokens_per_step is None:
        return 1
    if tokens_per_step % per_batch:
        raise ValueError(
            f"--tokens-per-step {tokens_per_step} is not a multiple of batch size x block size ({per_batch}); "
            f"give, say, {max(1, round(tokens_per_step / per_batch)) * per_batch}"
        )
    return tokens_per_step // per_batch


def clip(model: torch.nn.Module, max_norm: float | None) -> float:
    """Scale the gradients down to max_norm (None or 0: leave them) and return their norm before, for the log."""
    params = [p for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(params, max_norm or math.inf).item()
