"""LoRA in the network: a projection kept as its base weight with a low-rank branch beside it, computed as
PEFT computes an unmerged adapter:

    y = x W^T + b + scale * B(A(dropout(x)))      A [r, in], B [out, r], scale = lora_alpha / r

Training adds fresh branches to train (training/lora.py); loading keeps a PEFT adapter's branches so when
asked (merge_lora=False, loading/lora.py), instead of merging them into the weights. Each branch's output
passes a named point of its own, where a hook reads or replaces what the adapter adds [B, T, out]:
blocks.{i}.attn.hook_lora_c_attn, attn.hook_lora_c_proj, mlp.hook_lora_c_fc and mlp.hook_lora_c_proj.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import Hook

PROJECTIONS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # the ones LoRA adapts, in each block h.N
POINT = "hook_lora_"  # + the projection's name: the branch's hook point, in its module's prefix


class LoRALinear(nn.Linear):
    """A projection with a LoRA branch: the base layer's own weight and bias (the same parameters, under the
    same names, so the rest of the model reads them as before), and lora_A, lora_B as PEFT names them."""

    def __init__(self, base: nn.Linear, rank: int, scale: float, dropout: float, hook_name: str):
        super().__init__(base.in_features, base.out_features, bias=False, device="meta")  # no weight of its own
        self.weight, self.bias = base.weight, base.bias
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        # PEFT's init: A as nn.Linear's (Kaiming uniform), B zero, so that the branch starts at nothing.
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, **like)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, **like)
        nn.init.zeros_(self.lora_B.weight)
        # A float, not an nn.Dropout, so that a run's --dropout (every nn.Dropout of the model) leaves it alone.
        self.rank, self.scale, self.dropout, self.hook_name = rank, scale, dropout, hook_name

    def forward(self, x: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        return super().forward(x) + self.branch(x, hook)

    def branch(self, x: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """What the adapter adds to the base layer's output, passed through its hook point."""
        added = self.lora_B(self.lora_A(F.dropout(x, self.dropout, self.training))) * self.scale
        return added if hook is None else hook(self.hook_name, added)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}, dropout={self.dropout:g}"


def project(linear: nn.Module, x: torch.Tensor, hook: Hook) -> torch.Tensor:
    """linear(x); an adapted projection's branch passes its hook point on the way."""
    return linear(x, hook) if isinstance(linear, LoRALinear) else linear(x)


def adapt(model: nn.Module, name: str, *, rank: int, scale: float, dropout: float) -> LoRALinear:
    """Put a LoRALinear around the model's projection `name` ("h.0.attn.c_attn"), in its place."""
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    adapted = LoRALinear(getattr(parent, attribute), rank, scale, dropout, parent.hook_prefix + POINT + attribute)
    setattr(parent, attribute, adapted)
    return adapted


def adapters(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's adapted projections, by name ("h.0.attn.c_attn"), in the model's order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def is_lora_point(name: str) -> bool:
    return name.rpartition(".")[2].startswith(POINT)
