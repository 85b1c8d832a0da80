"""`minigpt2 explore PROMPT --output page.html`: one offline page to walk through a generation."""

from __future__ import annotations

import argparse
import itertools
import sys

from ..explore import explore
from ..interp.sae import SAE
from ..writing import check_writable
from .options import (
    DEFAULT_PROMPT,
    Parser,
    add_generation_options,
    add_load_options,
    generation_config,
    load_from_args,
    positive_int,
    status,
)

EXAMPLES = """examples:
  minigpt2 explore "Once upon a time" --output page.html
  minigpt2 explore "The capital of France is" --model gpt2 --max-new-tokens 10 --candidates 20
  minigpt2 explore "Once upon a time" --do-sample --temperature 0.8 --seed 1 --output sampled.html
  minigpt2 explore "The Eiffel Tower is in" --model gpt2 --sae ./my-sae      # with an SAE's features
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="minigpt2 explore",
        description="Generate from a prompt and write one self-contained HTML page (it opens from disk, with\n"
        "no network) that walks through every step: the candidates and the token picked, each layer's\n"
        "and head's attention, the logit lens, and each head's and MLP's direct contribution to the\n"
        "picked token.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", metavar="PROMPT", nargs="?", default=DEFAULT_PROMPT, help=f'(default: "{DEFAULT_PROMPT}")')
    p.add_argument("--output", "-o", metavar="FILE", default="explore.html", help="the page (default: explore.html)")
    p.add_argument(
        "--candidates", metavar="K", type=positive_int, default=10, help="next tokens listed at each step (default: 10)"
    )
    p.add_argument(
        "--sae",
        metavar="PATH",
        help="an SAE in SAELens's format (a folder, or a hub repo) whose features the page shows",
    )
    p.add_argument(
        "--sae-folder", metavar="NAME", help="the SAE's folder inside --sae (SAELens releases: one per hook)"
    )
    add_load_options(p)
    add_generation_options(p)
    return p


def run(args: argparse.Namespace) -> None:
    check_writable(args.output)  # before a model is loaded
    sae = SAE.from_pretrained(args.sae, args.sae_folder) if args.sae else None
    model, tokenizer = load_from_args(args)
    numbers = itertools.count(1)

    def progress(step):
        if sys.stderr.isatty():
            print(f"\rstep {next(numbers)}", end="", file=sys.stderr, flush=True)

    exploration = explore(
        model,
        tokenizer,
        args.prompt,
        candidates=args.candidates,
        model_name=args.model,
        on_step=progress,
        config=generation_config(args, model),
        sae=sae,
    )
    status("\nreading attention, the logit lens and the attribution ...")
    size = exploration.save(args.output)
    print(f"wrote {args.output}: {exploration.steps} steps, {size / 1e6:.2f} MB")
