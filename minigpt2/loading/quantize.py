"""Opt-in int8 weights: GPT2.from_pretrained(..., quantize="int8"), --quantize int8.

Every projection (c_attn, c_proj, c_fc) and the LM head becomes an Int8Linear: int8 rows with one fp32
scale per output channel (symmetric: w ~ q * scale, q in -127..127, scale = max |w| of the row / 127),
multiplied by torch's weight-only int8 kernel, which reads a quarter of fp32's bytes per token.
Everything else (embeddings, LayerNorms, biases, the residual stream) stays as loaded. The modules are
swapped before the checkpoint is read, and each weight is quantized as it is read, so the fp32 model is
never held whole (swaps.py).

It changes the numbers: the benchmark measures how far from fp32 (and README says).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCHEMES = ("int8",)
ROWS_AT_ONCE = 256  # rows quantized together, in one reused buffer: a few MB, whatever the matrix


class Int8Linear(nn.Module):
    """nn.Linear with its weight as int8 rows `qweight` [out, in] and their `scales` [out]. qweight is a
    parameter without gradient and scales a buffer, so .to(), state_dict() and num_params() see both;
    `weight` reads back the dequantized matrix for code that looks at it (a head's slice of c_proj)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        q = torch.empty(out_features, in_features, dtype=torch.int8, device=device)
        self.qweight = nn.Parameter(q, requires_grad=False)
        self.register_buffer("scales", torch.empty(out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self._unit_scales = None  # the kernel's unit scales, made on first use

    @classmethod
    def like(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.in_features, linear.out_features, linear.bias is not None, device=linear.weight.device)

    def load_rows(self, weight: torch.Tensor) -> None:
        """Quantize a float [out, in] weight into this module (a tied head, from the loaded wte)."""
        q, self.scales = quantize_rows(weight)
        self.qweight = nn.Parameter(q, requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.qweight.float() * self.scales[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ w.T + bias, for x [..., in]: the int8 kernel on the CPU, a dequantizing product elsewhere."""
        rows = x.reshape(-1, x.size(-1))
        if x.device.type == "cpu":
            # torch's int8 kernel reads fastest with bf16 activations (6x fp32's on an AVX-512 CPU); it gets
            # unit scales, and the fp32 scales are applied to its output, which rounds no more than it must.
            y = torch._weight_int8pack_mm(rows.to(torch.bfloat16), self.qweight, self._units(x.device))
            y = y.to(x.dtype) * self.scales.to(x.dtype)
        else:  # no int8 kernel there: convert the weight on the way (the scales factor out of the product)
            y = F.linear(rows, self.qweight.to(x.dtype)) * self.scales.to(x.dtype)
        y = y.view(*x.shape[:-1], -1)
        return y + self.bias if self.bias is not None else y

    def _units(self, device) -> torch.Tensor:
        if self._unit_scales is None or self._unit_scales.device != device:
            self._unit_scales = torch.ones(self.out_features, dtype=torch.bfloat16, device=device)
        return self._unit_scales


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A [out, in] weight as int8 rows and one fp32 scale per row, a few rows at a time."""
    weight = weight.detach()
    out_features, in_features = weight.shape
    q = torch.empty(out_features, in_features, dtype=torch.int8, device=weight.device)
    scales = torch.empty(out_features, dtype=torch.float32, device=weight.device)
    buffer = torch.empty(min(ROWS_AT_ONCE, out_features), in_features, device=weight.device)
    for start in range(0, out_features, ROWS_AT_ONCE):
        rows = weight[start : start + ROWS_AT_ONCE].float()  # bf16 and fp16 weights are quantized from fp32
        work = buffer[: len(rows)]
        torch.abs(rows, out=work)
        scale = scales[start : start + len(rows)]
        torch.amax(work, dim=1, out=scale)
        scale.div_(127).clamp_(min=torch.finfo(torch.float32).tiny)
        torch.div(rows, scale[:, None], out=work)
        q[start : start + len(rows)] = work.round_().clamp_(-127, 127)
    return q, scales
