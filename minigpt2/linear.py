"""Every matrix product of the model: F.linear by default, oneDNN's kernel where asked for."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .quantize import Int8Weight

# On the CPU, torch computes fp32 matrix products with MKL, as transformers does, and the logits
# of the two agree to about 1e-5. oneDNN's kernels read the weights faster when there are few rows,
# the decode loop's shapes, provided a weight lies [out, in] in order (fp32 loaded with
# contiguous=True). On a transposed view of the file's [in, out] mapping, the zero-copy default,
# they are slower than MKL, so such weights stay with F.linear. (In bf16, oneDNN was no faster
# than F.linear in the benchmark: 1.02x in one run, 0.88x in another.)
# They round differently, 2-3x as far from an fp64 result as MKL, and so further from
# transformers' logits. Hence opt-in: `with onednn_matmuls(): model.generate(...)`.
_ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_ONEDNN_MAX_ROWS = 16  # from about 32 rows on (a prompt), MKL is the faster
_use_onednn = False


@contextmanager
def onednn_matmuls(enabled: bool = True):
    """Inside this block, fp32 products of up to 16 rows with an [out, in] weight (loaded with contiguous=True)
    on the CPU run on oneDNN: faster, rounded differently."""
    global _use_onednn
    previous, _use_onednn = _use_onednn, enabled and _ONEDNN_AVAILABLE
    try:
        yield
    finally:
        _use_onednn = previous


def linear(x: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias: F.linear, or oneDNN's product inside onednn_matmuls() where it suits, or the
    int8 kernel for a weight quantized at load (minigpt2/quantize.py)."""
    if isinstance(weight, Int8Weight):
        return weight.linear(x, bias)
    if _use_onednn and _suits_onednn(x, weight, bias):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def dense(weight) -> torch.Tensor:
    """A weight as a plain [out, in] tensor, for code that reads it rather than multiplies by it (a head's
    slice of c_proj): an int8 weight comes back dequantized."""
    return weight.dequantize() if isinstance(weight, Int8Weight) else weight


def _suits_onednn(x, weight, bias) -> bool:
    """A few fp32 rows on the CPU times an [out, in] weight in order, with no gradient wanted (oneDNN's
    product has no backward) and not inside torch.compile (which has no lowering for it, and picks
    its own kernels)."""
    few_rows = x.numel() <= _ONEDNN_MAX_ROWS * x.size(-1)
    on_cpu = x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias) if t is not None)
    in_order = weight.is_contiguous()
    return few_rows and on_cpu and in_order and not wants_grad and not torch.compiler.is_compiling()


class Linear(nn.Linear):
    """nn.Linear, computed by linear() above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
