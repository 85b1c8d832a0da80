"""What the commands share: the model options, the generation options, their checks, and loading.

Each generation option's argparse dest is its GenerationConfig field, left None when not given, so that
the value the CLI builds holds exactly what the command line says over the model's own defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .. import load
from ..generation import GenerationConfig
from ..generation.config import DEFAULTS, FIELDS
from ..loading import DTYPES
from ..loading.swaps import SCHEMES
from ..model import GPT2
from ..tokenizer import Tokenizer
from ..writing import check_writable

CLI_NEW_TOKENS = 40  # the command's length, twice the API's (DEFAULT_NEW_TOKENS): a tutorial's paragraph
DEFAULT_PROMPT = "Once upon a time"


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit code 2, as for every other bad input
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(low, text: str, kind=int, what="a whole number"):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"expected {what} of at least {low}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _at_least(1, text)


def non_negative_int(text: str) -> int:
    return _at_least(0, text)


def non_negative_float(text: str) -> float:
    return _at_least(0, text, float, "a number")  # temperature > 0 and top_p <= 1 are GenerationConfig's checks


def file_command(prog: str, description: str, examples: str, file_help: str) -> Parser:
    """The parser of a command that scores a file with a model: FILE, --json and the load options."""
    p = Parser(
        prog=prog, description=description, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("file", metavar="FILE", type=Path, help=file_help)
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON ('-': only JSON, on stdout)")
    add_load_options(p)
    return p


def check_json_path(json_path: str | None) -> None:
    """--json's file, checked before a model is loaded or a token scored ('-' is stdout)."""
    if json_path and json_path != "-":
        check_writable(json_path)


def write_figures(figures: dict, summary: str, json_path: str | None) -> None:
    """The summary on stdout, and the figures as JSON where --json asks ('-': the JSON alone, on stdout)."""
    if json_path == "-":
        print(json.dumps(figures, indent=2))
        return
    print(summary)
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")


def add_load_options(p: argparse.ArgumentParser) -> None:
    """--model and every LoadOptions' option: the source, the device and dtype, and the module swaps."""
    p.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        default="gpt2-medium",
        help="official name (gpt2, gpt2-medium, ...), hub repo org/name, or local path: a checkpoint folder, "
        "a weights file (.safetensors, .pth/.pt/.bin state dict, nanoGPT's ckpt.pt, llm.c's .bin) or a PEFT "
        "LoRA adapter folder",
    )
    add_source_options(p)
    p.add_argument(
        "--quantize",
        choices=SCHEMES,
        help="store the projections and the LM head as int8 (about 2.8x fp32's decode speed on an AVX-512 CPU; "
        "approximate)",
    )
    p.add_argument(
        "--fast",
        "--onednn",
        action="store_true",
        help="on the CPU, multiply with the kernel this machine runs fastest for each matrix shape and row count "
        "(timed once, kept in ~/.cache/minigpt2/kernels.json), weights copied to [out, in] at load: faster to "
        "decode, slower to load, rounded unlike transformers'",
    )


def add_source_options(p: argparse.ArgumentParser) -> None:
    """--revision, --base, --device and --dtype: what every command that loads a model takes."""
    p.add_argument("--revision", metavar="REV", help="hub branch, tag or commit to load (default: main)")
    add_base_option(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' dtype (default: float32)")


def add_base_option(p: argparse.ArgumentParser) -> None:
    """--base: the checkpoint a weights file or an adapter borrows from (export takes it alone)."""
    p.add_argument(
        "--base",
        "--config",  # its name before --base; in transformers, config= is a config object
        dest="base",
        metavar="BASE",
        help="the base checkpoint whose config.json and tokenizer a weights file borrows, or that a LoRA adapter "
        "adapts (default: the adapter's base_model_name_or_path; for nanoGPT and llm.c, GPT-2's tokenizer)",
    )


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """The length, sampling, repetition and stopping options that every generating command takes."""
    add_length_options(p)
    add_sampling_options(p)
    add_control_options(p)


def add_length_options(p: argparse.ArgumentParser) -> None:
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--max-new-tokens", metavar="N", type=positive_int, help=f"tokens to add (default: {CLI_NEW_TOKENS})"
    )
    length.add_argument("--max-length", metavar="N", type=positive_int, help="total length in tokens, prompt included")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    sampling = p.add_argument_group("sampling (default: greedy)")
    sampling.add_argument(
        "--do-sample", action="store_true", default=None, help="draw each token instead of taking the argmax"
    )
    sampling.add_argument(
        "--temperature",
        metavar="T",
        type=non_negative_float,
        help=f"divide the scores by T before drawing (default: {DEFAULTS['temperature']:g})",
    )
    sampling.add_argument(
        "--top-k",
        metavar="K",
        type=non_negative_int,
        help=f"draw from the K best (default: {DEFAULTS['top_k']}; 0: all)",
    )
    sampling.add_argument(
        "--top-p",
        metavar="P",
        type=non_negative_float,
        help=f"draw from the smallest set with probability P (default: {DEFAULTS['top_p']:g})",
    )
    sampling.add_argument("--seed", metavar="N", type=int, help="seed the draws, for the same text every run")


def add_control_options(p: argparse.ArgumentParser) -> None:
    controls = p.add_argument_group("repetition and stopping")
    controls.add_argument(
        "--repetition-penalty",
        metavar="F",
        type=non_negative_float,
        help="divide the scores of tokens already in the text by F (above 1 discourages them)",
    )
    controls.add_argument(
        "--no-repeat-ngram-size", metavar="N", type=positive_int, help="never repeat a run of N tokens"
    )
    controls.add_argument("--min-new-tokens", metavar="N", type=non_negative_int, help="hold eos back for N tokens")
    controls.add_argument(
        "--stop",
        dest="stop_strings",
        metavar="TEXT",
        action="append",
        help="stop a row once TEXT appears in what it generates (repeat for several)",
    )


def generation_config(args: argparse.Namespace, model: GPT2) -> GenerationConfig:
    """The GenerationConfig the command line asks for: the options given, over the checkpoint's generation
    defaults (generation_config.json, or config.json's eos), as transformers' generate() merges them; and
    CLI_NEW_TOKENS when neither gives a length."""
    given = {name: value for name, value in vars(args).items() if name in FIELDS and value is not None}
    lengths = ("max_new_tokens", "max_length")
    if not any(name in given or name in model.generation_defaults for name in lengths):
        given["max_new_tokens"] = CLI_NEW_TOKENS
    return GenerationConfig.build(model.generation_defaults, **given)


def load_from_args(
    args: argparse.Namespace, name: str | None = None, doing: str = "generating"
) -> tuple[GPT2, Tokenizer]:
    """The model the options name (or `name`, with the same options: an assistant model), and its tokenizer;
    the status line then says what the command goes on `doing`."""
    started = time.perf_counter()
    name = name or args.model
    status(f"loading {name} ...")
    model, tokenizer = load(
        name,
        revision=args.revision if name == args.model else None,
        base=args.base if name == args.model else None,
        device=args.device,
        dtype=args.dtype,
        quantize=args.quantize,
        fast=args.fast,
    )
    status(f"loaded {model.num_params() / 1e6:.1f}M parameters in {time.perf_counter() - started:.1f}s; {doing} ...")
    return model, tokenizer


def status(message: str) -> None:
    """Progress for a person watching; kept off stderr when it is a pipe, so errors stay one line."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr)


def counter(verb: str, noun: str) -> Callable[[int, int], None]:
    """on_progress(done, total) for a long loop: "scored 120/400 examples (30%)", one line of stderr rewritten
    in place and ended when done; like status, shown only on a terminal."""

    def show(done: int, total: int) -> None:
        if sys.stderr.isatty():
            line = f"\r{verb} {done}/{total} {noun} ({done / total:.0%})\x1b[K"  # \x1b[K: clear a longer line's rest
            print(line, end="\n" if done >= total else "", file=sys.stderr, flush=True)

    return show
