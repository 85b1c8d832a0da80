"""`minigpt2 export MODEL --gguf out.gguf`: a GPT-2 checkpoint as a GGUF file that llama.cpp runs."""

from __future__ import annotations

import argparse

from ..gguf import TYPES, export_checkpoint
from .options import Parser, add_base_option, counter, status

EXAMPLES = """examples:
  minigpt2 export gpt2-medium --gguf gpt2-medium-q8_0.gguf --type q8_0
  minigpt2 export ./my-finetune --gguf my-finetune-f32.gguf
  llama-cli -m gpt2-medium-q8_0.gguf -p "Once upon a time" -n 40     (llama.cpp's own tool)
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="minigpt2 export",
        description="Write a GPT-2 checkpoint (any that minigpt2 loads, with GPT-2's byte-level tokenizer)\n"
        'as GGUF for llama.cpp. Needs the gguf package: pip install "minigpt2[export]".',
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="NAME_OR_PATH", help="official name, hub repo org/name, or local path")
    p.add_argument("--gguf", metavar="FILE", required=True, help="the GGUF file to write")
    p.add_argument(
        "--type",
        choices=TYPES,
        default="f32",
        help="the 2-D weights' type; q8_0 is llama.cpp's 8-bit blocks (default: f32, exact)",
    )
    p.add_argument("--revision", metavar="REV", help="hub branch, tag or commit to load (default: main)")
    add_base_option(p)
    return p


def run(args: argparse.Namespace) -> None:
    status(f"loading {args.model} and writing {args.gguf} ...")
    progress = counter("converted", "tensors")
    size = export_checkpoint(
        args.model, args.gguf, args.type, revision=args.revision, base=args.base, on_tensor=progress
    )
    print(f"wrote {args.gguf}: {args.type}, {size / 1e6:.1f} MB")
