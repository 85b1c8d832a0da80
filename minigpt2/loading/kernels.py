"""Opt-in faster matrix products, measured per machine: GPT2.from_pretrained(..., fast=True), --fast.

By default every product is nn.Linear's F.linear, which on the CPU computes fp32 with MKL as
transformers does, so the logits agree to about 1e-5. Which kernel reads the weights fastest at the few
rows of a decode step (or of a k-token verify pass) differs from one CPU to the next: oneDNN won by 1.5x
on an AVX2 AMD EPYC and lost on an AVX-512 Xeon with AMX. So fast=True copies the projections to
[out, in] in order (the layout both kernels read fastest), times each candidate on the model's own
weights for each matrix shape and each row count up to 16, and uses the fastest; kernel_choice.py times
them and keeps the verdict per machine. A choice other than F.linear rounds differently (oneDNN's fp32
is 2-3x as far from an fp64 result as MKL), so further from transformers' logits: hence opt-in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ROW_COUNTS = (1, 2, 4, 8, 16)  # a product of r rows uses the choice of the first count >= r
DTYPES = (torch.float32, torch.bfloat16)  # fp16 has F.linear alone on the CPU


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _weight_first(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(W @ x^T)^T: MKL with the weight as the left operand, a blocking that some CPUs run faster at a
    few rows (an AVX2 EPYC: 87 ms against oneDNN's 93 for gpt2-medium's blocks at 4 rows)."""
    out = weight @ x.T if bias is None else torch.addmm(bias[:, None], weight, x.T)
    return out.T.contiguous()


# The candidates, each a product of x [rows, in] and an [out, in] weight in order (no backward: a product
# that needs a gradient, or runs inside torch.compile, is F.linear's).
KERNELS = {"F.linear": F.linear, "W @ x^T": _weight_first}
if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
    KERNELS["oneDNN"] = _onednn


class FastLinear(nn.Linear):
    """nn.Linear whose few-row products on the CPU run on the kernel measured fastest for its shape and
    row count (`kernels`, one name per ROW_COUNTS entry, set by kernel_choice.choose_kernels); everything
    else is F.linear."""

    kernels: tuple[str, ...] = ("F.linear",) * len(ROW_COUNTS)

    @classmethod
    def like(cls, linear: nn.Linear) -> FastLinear:
        w = linear.weight
        return cls(linear.in_features, linear.out_features, linear.bias is not None, device=w.device, dtype=w.dtype)

    def reset_parameters(self) -> None:  # a shell for the checkpoint's tensors: nothing to initialise
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel_for(x)
        if kernel is F.linear:
            return F.linear(x, self.weight, self.bias)
        return kernel(x.reshape(-1, x.size(-1)), self.weight, self.bias).view(*x.shape[:-1], -1)

    def kernel_for(self, x: torch.Tensor):
        rows = x.numel() // x.size(-1)
        if rows > ROW_COUNTS[-1] or not _suits_a_kernel(x, self.weight, self.bias):
            return F.linear
        return KERNELS[self.kernels[next(i for i, r in enumerate(ROW_COUNTS) if rows <= r)]]


def _suits_a_kernel(x, weight, bias) -> bool:
    """On the CPU, with the weight's dtype, a weight [out, in] in order, no gradient wanted and not inside
    torch.compile (which picks its own kernels)."""
    on_cpu = x.device.type == "cpu" and x.dtype == weight.dtype and weight.dtype in DTYPES
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias) if t is not None)
    return on_cpu and weight.is_contiguous() and not wants_grad and not torch.compiler.is_compiling()
