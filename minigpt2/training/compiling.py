"""--compile: the training step through torch.compile, where it is faster. On CUDA it is, and the compiled
model trains from the first step. On the CPU it may not be (a compiled bf16 decode step has run at 0.29x
eager, issue 23), so it is measured, not assumed: the run's first steps are timed eager, then compiled (the
first compiled step compiles, minutes for a large model), and the faster goes on for the rest of the run.
The log's row of the deciding step says which, with both times; the checkpoint keeps the choice, so a
resumed run makes the same one and stays bit for bit."""

from __future__ import annotations

import statistics

import torch

TRIALS = 3  # steps timed each way; the first of each is not counted (the allocator's warm-up, the compile)


class StepModule:
    """The module train_step runs: the (wrapped) model, or torch.compile of it, chosen as above."""

    def __init__(self, module: torch.nn.Module, device: torch.device, wanted: bool, chosen: bool | None = None):
        self.eager = module
        if not wanted:
            chosen = False
        elif chosen is None and device.type != "cpu":
            chosen = True
        self.chosen = chosen  # True compiled, False eager, None: measured on the CPU's first steps
        self.compiled = torch.compile(module) if chosen is not False else None
        self.seconds: list[float] = []

    def __call__(self, *args, **kwargs):
        compiled = self.chosen if self.chosen is not None else len(self.seconds) >= TRIALS
        return (self.compiled if compiled else self.eager)(*args, **kwargs)

    def timed(self, seconds: float) -> dict:
        """After each step, its time; the deciding step gets the figures for its log row."""
        if self.chosen is not None:
            return {}
        self.seconds.append(seconds)
        if len(self.seconds) < 2 * TRIALS:
            return {}
        eager = statistics.median(self.seconds[1:TRIALS]) * 1e3
        compiled = statistics.median(self.seconds[TRIALS + 1 :]) * 1e3
        self.chosen = compiled < eager
        if not self.chosen:
            self.compiled = None  # its code and graphs freed
        verdict = "training compiled" if self.chosen else "training eager, as without --compile"
        note = (
            f"--compile: a step takes {compiled:.1f} ms compiled and {eager:.1f} ms eager on this CPU "
            f"({eager / compiled:.2f}x); {verdict}"
        )
        return {
            "compile": "compiled" if self.chosen else "eager",
            "eager_ms": eager,
            "compiled_ms": compiled,
            "note": note,
        }
