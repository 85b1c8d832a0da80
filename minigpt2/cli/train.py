"""`minigpt2 train DATA`: fine-tune a checkpoint or train a GPT-2 from scratch (loop.py), or resume a run.

Options not given are left out of the namespace, so the defaults are TrainConfig's, stated there once, and
a resumed run keeps its own config but for what the command line changes.
"""

from __future__ import annotations

import argparse
import dataclasses

from ..model import PRESETS
from ..training import distributed
from ..training.config import AUTOCAST, TrainConfig
from ..training.loop import resume, train
from ..training.optim import SCHEDULES
from .options import Parser, non_negative_float, non_negative_int, positive_int, status

EXAMPLES = """examples:
  minigpt2 train notes.txt --model gpt2 --steps 200 --out out       # fine-tune gpt2 on a text file
  minigpt2 train input.txt --char --n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 \\
      --steps 2000 --lr 1e-3 --warmup 100 --beta2 0.99 --eval-every 250 --eval-batches 20   # nanoGPT's CPU recipe
  minigpt2 train chat.jsonl --instructions --model gpt2 --steps 500  # {prompt, completion} lines
  minigpt2 train notes.txt --model gpt2 --lora r=8,alpha=16,targets=c_attn,c_proj,c_fc   # LoRA adapters only
  minigpt2 train hf:roneneldan/TinyStories --n-layer 4 --n-head 4 --n-embd 256 --block-size 256 --track 100
  minigpt2 train --resume out                                       # on from the newest checkpoint in out/

Checkpoints are OUT/step-NNNNNN in transformers' save_pretrained layout, with training_state.pt beside the
model; the log is OUT/log.jsonl, one JSON row a step. See docs/training.md.
"""
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def fraction(text: str) -> float:
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction below 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="minigpt2 train",
        description="Train a GPT-2: fine-tune a checkpoint, or train one from scratch, on a text file or folder.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )

    def add(*flags, help: str, **kwargs):
        name = flags[0].lstrip("-").replace("-", "_")
        default = DEFAULTS.get(name)
        shown = "" if default in (None, False, "") else f" (default: {default})"
        p.add_argument(*flags, help=help + shown, **kwargs)

    p.add_argument(
        "data",
        metavar="DATA",
        nargs="?",
        help="a text file, a folder of .txt/.jsonl, llm.c's .bin token shards, hf:NAME (a Hugging Face data set), "
        "or (--instructions) JSONL of {prompt, completion}; with --resume, the run's own by default",
    )
    start = p.add_mutually_exclusive_group()
    start.add_argument("--model", metavar="NAME_OR_PATH", help="the checkpoint to fine-tune (gpt2, org/name, a folder)")
    start.add_argument("--resume", metavar="DIR", help="continue a run: OUT/step-N, or OUT for its newest checkpoint")
    shape = p.add_argument_group("a model from scratch (without --model)")
    shape.add_argument("--shape", metavar="PRESET", choices=PRESETS, help=f"a preset: {', '.join(PRESETS)}")
    for flag in ("--n-layer", "--n-head", "--n-embd"):
        shape.add_argument(flag, metavar="N", type=positive_int, help="over the preset's (default: gpt2's)")
    shape.add_argument("--vocab-size", metavar="N", type=positive_int, help="(default: the tokenizer's)")
    add("--char", action="store_true", help="a character vocabulary built from the data, as nanoGPT's shakespeare_char")
    add("--tokenizer", metavar="NAME_OR_PATH", help="the checkpoint whose tokenizer reads the data")
    add(
        "--instructions",
        action="store_true",
        help="DATA is JSONL of {prompt, completion}: only completions are learned",
    )
    add("--dataset-config", metavar="NAME", help="hf:NAME data: its configuration (load_dataset's name)")
    add("--dataset-split", metavar="SPLIT", help="hf:NAME data: the split read")
    add("--text-field", metavar="COLUMN", help="hf:NAME data: the column whose text is a document")
    add("--block-size", metavar="N", type=positive_int, help="tokens a row (default: the model's n_positions)")
    add("--val-fraction", metavar="F", type=fraction, help="the end of the data held out for the val loss")
    add("--out", metavar="DIR", help="where the checkpoints and the log go")
    add("--steps", metavar="N", type=positive_int, help="optimizer steps")
    add("--batch-size", metavar="N", type=positive_int, help="rows a micro-batch")
    add("--tokens-per-step", metavar="N", type=positive_int, help="accumulate micro-batches to N tokens a step")
    add(
        "--lr",
        metavar="LR",
        type=non_negative_float,
        help="peak learning rate (default: 6e-4 from scratch, 3e-5 fine-tuning, 2e-4 with --lora)",
    )
    add("--min-lr", metavar="LR", type=non_negative_float, help="the learning rate at the end (default: lr / 10)")
    add("--warmup", metavar="N", type=non_negative_int, help="steps of linear warmup")
    add("--schedule", choices=SCHEDULES, help="after warmup")
    add("--weight-decay", metavar="W", type=non_negative_float, help="on the matrices and embeddings only")
    add("--beta1", metavar="B", type=non_negative_float, help="AdamW's")
    add("--beta2", metavar="B", type=non_negative_float, help="AdamW's")
    add("--grad-clip", metavar="NORM", type=non_negative_float, help="clip the gradients' norm (0: never)")
    add(
        "--dropout",
        metavar="P",
        type=fraction,
        help="embd/attn/resid_pdrop (default: the checkpoint's; 0 from scratch)",
    )
    add(
        "--lora",
        metavar="SPEC",
        nargs="?",
        const="",
        help="train LoRA adapters only, the base frozen, saved in PEFT's layout: r=8,alpha=16,targets=c_attn,c_proj,"
        "c_fc,dropout=0.05 (left out: r 8, alpha 2r, targets c_attn, dropout 0)",
    )
    add("--device", help="cpu, cuda, cuda:1, mps")
    add(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard the model over the processes (FSDP2), for a model one device does not hold",
    )
    add(
        "--compile",
        action="store_true",
        help="torch.compile the model; on the CPU only if its first steps are faster compiled than eager",
    )
    add(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute each block's activations in the backward pass: less memory, about a third more time",
    )
    add("--dtype", choices=AUTOCAST, help="autocast: bfloat16 (CPU, CUDA), float16 (CUDA, with a GradScaler)")
    add("--eval-every", metavar="N", type=positive_int, help="steps between val losses (and at the end)")
    add("--eval-batches", metavar="N", type=positive_int, help="the fixed val batches")
    add("--eval-choices", metavar="FILE", help="multiple-choice JSONL scored at every val loss (choice_accuracy)")
    add(
        "--track",
        dest="track_every",
        metavar="N",
        type=positive_int,
        help="every N steps, each head's induction and previous-token score, entropy, residual norms",
    )
    add("--sample-every", metavar="N", type=non_negative_int, help="steps between seeded samples (0: none)")
    add("--sample-tokens", metavar="N", type=positive_int, help="tokens a sample")
    add("--save-every", metavar="N", type=positive_int, help="steps between checkpoints (and at the end)")
    add("--keep", metavar="K", type=positive_int, help="checkpoints kept, the newest")
    add(
        "--log-every",
        metavar="N",
        type=non_negative_int,
        help="steps between progress lines when stderr is no terminal",
    )
    add("--seed", metavar="N", type=int, help="for the init and the batches")
    add("--log", metavar="FILE", help="the JSONL log of every step (default: OUT/log.jsonl)")
    add("--plot", action="store_true", help="draw the loss curves into OUT/loss.png at the end (matplotlib)")
    p.add_argument(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        help="no TensorBoard scalars (written to OUT/tensorboard when tensorboard is installed)",
    )
    return p


def run(args: argparse.Namespace) -> None:
    given = vars(args)
    folder = given.pop("resume", None)
    if folder is not None:
        if distributed.is_main():  # under torchrun, one line for all the processes
            status(f"resuming {folder} ...")
        trainer = resume(folder, **given)
    else:
        if "data" not in given:
            raise ValueError("give the DATA to train on (or --resume DIR to continue a run)")
        trainer = train(TrainConfig(**given))
    last = trainer.history[-1] if trainer.history else {"step": trainer.step}
    val = f", val loss {last['val_loss']:.4f}" if "val_loss" in last else ""
    if distributed.is_main():
        print(f"step {last['step']}{val}; checkpoints in {trainer.out}")
