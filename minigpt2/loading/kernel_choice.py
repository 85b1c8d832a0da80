"""Which kernel multiplies each of a model's matrix shapes fastest on this machine (fast=True): each
candidate of kernels.KERNELS is timed on the model's own weights, at each row count of kernels.ROW_COUNTS,
once per machine, and the timings and the verdict kept in the machine's record (machine.py)."""

from __future__ import annotations

import math
import statistics
import sys
import time

import torch
from torch import nn

from ..machine import keep, measured
from .kernels import DTYPES, KERNELS, ROW_COUNTS, FastLinear

ROUNDS = 3
SAMPLE_MS = 10  # small matrices: many passes a sample, so that a sample is not one tick of the clock


def shape_groups(model: nn.Module) -> dict[str, list[FastLinear]]:
    """'float32 1024x3072 x24' -> the model's FastLinears of that dtype and [in]x[out] shape."""
    groups: dict[str, list[FastLinear]] = {}
    for module in model.modules():
        if isinstance(module, FastLinear) and module.weight.dtype in DTYPES and module.weight.device.type == "cpu":
            key = f"{str(module.weight.dtype).removeprefix('torch.')} {module.in_features}x{module.out_features}"
            groups.setdefault(key, []).append(module)
    return {f"{key} x{len(modules)}": modules for key, modules in groups.items()}


def choose_kernels(model: nn.Module) -> None:
    """Set each FastLinear's kernels from this machine's record, timing the shapes it does not hold yet."""
    groups = shape_groups(model)
    verdicts = measured()
    missing = [key for key in groups if not _usable(verdicts.get(key))]
    if missing:
        print(
            f"minigpt2: timing the fast kernels for {len(missing)} matrix shapes, once on this machine", file=sys.stderr
        )
        timed = {key: time_kernels(groups[key]) for key in missing}
        keep(timed)
        verdicts.update(timed)
    for key, modules in groups.items():
        for module in modules:
            module.kernels = tuple(verdicts[key]["chosen"])


def time_kernels(modules: list[FastLinear]) -> dict:
    """{"ms": {kernel: [ms per pass over the modules, at each row count]}, "chosen": [kernel per row count],
    "failed": {kernel: why}}: the median of ROUNDS passes over every module of the shape (the model's own
    weights, so the figures read memory as a decode step does)."""
    weight = modules[0].weight
    ms: dict[str, list[float]] = {}
    failed = {}
    with torch.inference_mode():
        for name, kernel in KERNELS.items():
            try:
                kernel(torch.zeros(1, weight.size(1), dtype=weight.dtype), weight, modules[0].bias)
            except RuntimeError as error:  # oneDNN without bf16 kernels on this CPU, say
                failed[name] = str(error).splitlines()[0].split(". ")[0]  # oneDNN adds a line of advice
                continue
            ms[name] = [_median_ms(kernel, modules, rows) for rows in ROW_COUNTS]
    chosen = [min(ms, key=lambda name: ms[name][i]) for i in range(len(ROW_COUNTS))]
    return {"ms": ms, "chosen": chosen, "failed": failed}


def _median_ms(kernel, modules: list[FastLinear], rows: int) -> float:
    """ms a pass over the modules: the median of ROUNDS samples, each of enough passes to last SAMPLE_MS."""
    x = torch.randn(rows, modules[0].in_features, dtype=modules[0].weight.dtype)

    def passes(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            for module in modules:
                kernel(x, module.weight, module.bias)
        return (time.perf_counter() - start) * 1e3 / n

    n = max(1, min(100, math.ceil(SAMPLE_MS / max(passes(1), 1e-3))))  # the first pass also warms the kernel
    return round(statistics.median(passes(n) for _ in range(ROUNDS)), 3)


def describe_kernels(model: nn.Module) -> list[str]:
    """One line per matrix shape: the kernel used at each row count, and the timings it was chosen from."""
    verdicts = measured()
    lines = []
    for key, modules in shape_groups(model).items():
        chosen = modules[0].kernels
        line = f"{key}: " + ", ".join(f"{rows} rows {name}" for rows, name in zip(ROW_COUNTS, chosen))
        if key in verdicts:
            ms = verdicts[key]["ms"]
            line += " (ms a pass: " + "; ".join(f"{n} " + "/".join(f"{t:.3g}" for t in ms[n]) for n in ms) + ")"
            line += "".join(f"; {n} fails here: {why}" for n, why in verdicts[key]["failed"].items())
        lines.append(line)
    return lines


def _usable(verdict) -> bool:
    """A verdict this torch can follow, from every candidate there is now (a damaged record, or one from
    before a candidate was added, is timed again)."""
    if not isinstance(verdict, dict) or not isinstance(verdict.get("chosen"), list):
        return False
    chosen, tried = verdict["chosen"], set(verdict.get("ms", {})) | set(verdict.get("failed", {}))
    return len(chosen) == len(ROW_COUNTS) and tried == set(KERNELS) and set(chosen) <= tried
