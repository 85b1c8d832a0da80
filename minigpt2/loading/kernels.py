"""Opt-in faster matrix products, chosen per model at load: GPT2.from_pretrained(..., fast=True), --fast.

By default every product is nn.Linear's F.linear, which on the CPU computes fp32 with MKL as
transformers does, so the logits agree to about 1e-5. oneDNN's kernels read the weights faster when
there are few rows (the decode loop's shapes), provided a weight lies [out, in] in order; on a
transposed view of the file's [in, out] mapping (the zero-copy default) they are slower than MKL. So
fast=True copies fp32 projections to [out, in] at load and swaps each nn.Linear for a OneDNNLinear.
They round differently, 2-3x as far from an fp64 result as MKL, and so further from transformers'
logits: hence opt-in. (In bf16, oneDNN was no faster than F.linear in the benchmark.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
ONEDNN_MAX_ROWS = 16  # from about 32 rows on (a prompt), MKL is the faster


class OneDNNLinear(nn.Linear):
    """nn.Linear whose few-row fp32 products on the CPU run on oneDNN; everything else is F.linear."""

    @classmethod
    def like(cls, linear: nn.Linear) -> OneDNNLinear:
        w = linear.weight
        return cls(linear.in_features, linear.out_features, linear.bias is not None, device=w.device, dtype=w.dtype)

    def reset_parameters(self) -> None:  # a shell for the checkpoint's tensors: nothing to initialise
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _suits_onednn(x, self.weight, self.bias):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def _suits_onednn(x, weight, bias) -> bool:
    """A few fp32 rows on the CPU times an [out, in] weight in order, with no gradient wanted (oneDNN's
    product has no backward) and not inside torch.compile (which has no lowering for it, and picks
    its own kernels)."""
    few_rows = x.numel() <= ONEDNN_MAX_ROWS * x.size(-1)
    on_cpu = x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias) if t is not None)
    in_order = weight.is_contiguous()
    return few_rows and on_cpu and in_order and not wants_grad and not torch.compiler.is_compiling()
