"""The benchmark's train section: tokens/s of minigpt2's trainer against the same loop written over
transformers' GPT2LMHeadModel (torch's AdamW over the same decay groups, the same clipping, the same
autocast), timed in turn in the same rounds; and each one's peak memory, from a fresh process of its own.

Shapes: nanoGPT's CPU recipe (shakespeare_char: 4 layers, 128 wide, block 64, batch 12) and the gpt2 shape
at block 256, one row a step (a step of 256 tokens takes seconds on a 2-core CPU). The data are random
characters: speed does not depend on what the text says.

bf16 on a CPU without native bf16 (AVX2 only) is emulated, 10-40x slower than fp32 (the trainer warns):
its row is timed on the recipe's shape only, and the gpt2 shape's says why it was not."""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from minigpt2.training import TrainConfig, Trainer
from minigpt2.training.config import native_bf16
from minigpt2.training.optim import decay_groups

SHAPES = {
    "recipe": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12),
    "gpt2": dict(shape="gpt2", block_size=256, batch_size=1),
}
AUTOCAST = {"float32": None, "bfloat16": torch.bfloat16}
MEMORY_STEPS = 3


def emulated_bf16(shape: str, dtype: str) -> bool:
    """Whether this shape's row in this dtype is left out: bf16 that this CPU emulates, past the recipe."""
    native = native_bf16() or torch.cuda.is_available()
    return dtype == "bfloat16" and not native and shape != "recipe"


PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
from bench.train import peak_memory
print(peak_memory(*sys.argv[2:]))
"""


def trainer_for(shape: str, dtype: str, scratch: Path) -> Trainer:
    """minigpt2's Trainer, from scratch, on random characters (a char vocabulary of 64, the model's own size)."""
    data = scratch / "random.txt"
    if not data.exists():
        rng = random.Random(0)
        data.write_text(
            "".join(
                rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'-\n") for _ in range(200_000)
            )
        )
    config = TrainConfig(
        str(data), out=str(scratch / f"out-{shape}-{dtype}"), char=True, **SHAPES[shape], dtype=dtype,
        vocab_size=50257 if shape == "gpt2" else None, steps=10**9, eval_every=10**9, save_every=10**9,
        log_every=0, tensorboard=False,
    )  # fmt: skip
    with warnings.catch_warnings():  # emulated bf16's warning: the section reports it
        warnings.simplefilter("ignore")
        return Trainer(config)


class ReferenceLoop:
    """The loop nanoGPT's train.py runs, over transformers' GPT2LMHeadModel, with minigpt2's initial weights
    and batches: forward under autocast, backward, clip, AdamW's step."""

    def __init__(self, trainer: Trainer):
        from transformers import GPT2Config, GPT2LMHeadModel

        from minigpt2.training.checkpoints import hf_config, hf_state_dict

        ours = trainer.model
        config = GPT2Config(**hf_config(ours.config, None, None))
        self.model = GPT2LMHeadModel(config).train()
        self.model.load_state_dict(hf_state_dict(ours), strict=False)  # the attention's causal buffers stay
        c = trainer.config
        self.optimizer = torch.optim.AdamW(
            decay_groups(self.model, c.weight_decay), lr=c.lr, betas=(c.beta1, c.beta2), fused=True
        )
        self.batches, self.amp, self.clip = trainer.batches, trainer.amp, c.grad_clip

    def step(self) -> int:
        x, y = next(self.batches)
        with torch.autocast("cpu", dtype=self.amp, enabled=self.amp is not None):
            loss = self.model(x, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip).item()  # logged, as ours is
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss.item()
        return x.numel()


def train_runs(shape: str, dtype: str, scratch: Path, steps: int) -> dict:
    """{name: fn() -> tokens trained}: `steps` optimizer steps of each."""
    trainer = trainer_for(shape, dtype, scratch)
    reference = ReferenceLoop(trainer)
    tokens = trainer.config.batch_size * trainer.block_size

    def ours():
        for _ in range(steps):
            trainer.train_step()
        return steps * tokens

    def theirs():
        return sum(reference.step() for _ in range(steps))

    return {"minigpt2": ours, "transformers": theirs}


def peak_memory(which: str, shape: str, dtype: str) -> int:
    """Peak resident memory over MEMORY_STEPS steps, above the process before the run was built (Linux's
    VmHWM, reset once the run is built, so the model the reference copies its weights from is not counted)."""

    def resident(field: str) -> int:
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))

    if which == "transformers":
        import transformers  # noqa: F401  (its import is not training's memory)

    with tempfile.TemporaryDirectory() as scratch:
        before = resident("VmRSS:")
        trainer = trainer_for(shape, dtype, Path(scratch))
        step = trainer.train_step
        if which == "transformers":
            step = ReferenceLoop(trainer).step
            trainer.model = trainer.optimizer = None  # only the reference trains
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
        for _ in range(MEMORY_STEPS):
            step()
        return resident("VmHWM:") - before


def memory_figures(shape: str, dtype: str) -> dict:
    """Each library's peak memory, in a fresh process each."""
    scripts = str(Path(__file__).resolve().parents[1])
    figures = {}
    for which in ("minigpt2", "transformers"):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, scripts, which, shape, dtype], capture_output=True, text=True, check=True
        )
        figures[which] = int(done.stdout.split()[-1])
    return figures
