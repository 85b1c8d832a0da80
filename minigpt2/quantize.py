"""Opt-in int8 weights: GPT2.from_pretrained(..., quantize="int8"), --quantize int8.

Every projection (c_attn, c_proj, c_fc) and the LM head is stored as int8 with one fp32 scale per
output channel (symmetric: w ~ q * scale, q in -127..127, scale = max |w| of the row / 127), and
multiplied by torch's weight-only int8 kernel, which reads a quarter of fp32's bytes per token.
Everything else (embeddings, LayerNorms, biases, the residual stream) stays as loaded. Weights are
quantized as they are read, tensor by tensor, so the fp32 model is never held whole.

It changes the numbers: scripts/benchmark.py measures how far from fp32 (and README says).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCHEMES = ("int8",)


class Int8Weight:
    """A [out, in] weight as int8 rows and their scales; linear() multiplies by it."""

    ROWS_AT_ONCE = 256  # rows quantized together, in one reused buffer: a few MB, whatever the matrix

    def __init__(self, weight: torch.Tensor):
        weight = weight.detach()
        out_features, in_features = weight.shape
        self.q = torch.empty(out_features, in_features, dtype=torch.int8, device=weight.device)
        self.scale = torch.empty(out_features, dtype=torch.float32, device=weight.device)
        buffer = torch.empty(min(self.ROWS_AT_ONCE, out_features), in_features, device=weight.device)
        for start in range(0, out_features, self.ROWS_AT_ONCE):
            rows = weight[start : start + self.ROWS_AT_ONCE]
            work = buffer[: len(rows)]
            torch.abs(rows, out=work)
            scale = self.scale[start : start + len(rows)]
            torch.amax(work, dim=1, out=scale)
            scale.div_(127).clamp_(min=torch.finfo(torch.float32).tiny)
            torch.div(rows, scale[:, None], out=work)
            self.q[start : start + len(rows)] = work.round_().clamp_(-127, 127)
        self._ones = None  # the kernel's unit scales, made once on first use

    @property
    def shape(self) -> torch.Size:
        return self.q.shape

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scale[:, None]

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x @ w.T + bias, for x [..., in]: the int8 kernel on the CPU, a dequantizing product elsewhere."""
        rows = x.reshape(-1, x.size(-1))
        if x.device.type == "cpu":
            # torch's int8 kernel reads fastest with bf16 activations (6x fp32's on an AVX-512 CPU); it gets
            # unit scales, and the fp32 scales are applied to its output, which rounds no more than it must.
            y = torch._weight_int8pack_mm(rows.to(torch.bfloat16), self.q, self._unit_scales(x.device))
            y = y.to(x.dtype) * self.scale.to(x.dtype)
        else:  # no int8 kernel there: convert the weight on the way (the scales factor out of the product)
            y = F.linear(rows, self.q.to(x.dtype)) * self.scale.to(x.dtype)
        y = y.view(*x.shape[:-1], -1)
        return y + bias if bias is not None else y

    def _unit_scales(self, device) -> torch.Tensor:
        if getattr(self, "_ones", None) is None or self._ones.device != device:
            self._ones = torch.ones(self.q.size(0), dtype=torch.bfloat16, device=device)
        return self._ones

    def to(self, device) -> Int8Weight:
        moved = object.__new__(Int8Weight)
        moved.q, moved.scale, moved._ones = self.q.to(device), self.scale.to(device), None
        return moved


PROJECTIONS = ("c_attn.weight", "c_proj.weight", "c_fc.weight")


def check(quantize: str | None) -> None:
    if quantize is not None and quantize not in SCHEMES:
        raise ValueError(f"quantize must be one of {', '.join(SCHEMES)} (or None), got {quantize!r}")


def attach(model, weights: dict[str, Int8Weight]) -> None:
    """Put int8 weights in place of the (meta) projection weights they were read for, then give the model
    an int8 LM head, quantized from the token embedding it is tied to (which stays for the lookups)."""
    for name, weight in weights.items():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        del module._parameters["weight"]
        module.weight = weight
    model.head = Int8Weight(model.unembedding).to(model.wte.weight.device)
