"""`minigpt2 perplexity FILE`: how well a model predicts a text, through transformers' sliding window."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..scoring import perplexity
from .options import check_json_path, counter, file_command, load_from_args, positive_int, write_figures

EXAMPLES = """examples:
  minigpt2 perplexity wiki.test.raw --model gpt2-large --stride 512
  minigpt2 perplexity notes.txt --model ./my-finetune --stride 256 --json ppl.json
  minigpt2 perplexity wiki.test.raw --model gpt2 --quantize int8 --batch-size 4

The window covers the model's context (1024 tokens for GPT-2) and moves by --stride; every token but
the first is scored once, with as much context as its window gives it (transformers' perplexity
guide). Perplexity is exp(NLL sum / tokens); bits per byte is NLL sum / (UTF-8 bytes x ln 2); word
perplexity is exp(NLL sum / whitespace-separated words).
"""


def build_parser() -> argparse.ArgumentParser:
    p = file_command(
        "minigpt2 perplexity",
        "The perplexity of a text file (UTF-8) under a GPT-2 checkpoint, with a sliding window.",
        EXAMPLES,
        "the text to score (UTF-8)",
    )
    p.add_argument(
        "--stride",
        metavar="N",
        type=positive_int,
        help="window step in tokens (default: 512, or the context if shorter)",
    )
    p.add_argument(
        "--batch-size", metavar="N", type=positive_int, default=1, help="windows per forward pass (default: 1)"
    )
    return p


def read_text(path: Path) -> str:
    """A text file's contents, or a one-line error that says what is wrong with it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    try:
        text = path.read_bytes().decode("utf-8")  # the file's own bytes: no newline translation
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start} cannot be decoded); convert it first") from None
    if not text.strip():
        raise ValueError(f"{path} is empty; give a text to score")
    return text


def run(args: argparse.Namespace) -> None:
    text = read_text(args.file)  # both before a model is loaded
    check_json_path(args.json)
    model, tokenizer = load_from_args(args, doing="scoring")
    args.stride = args.stride or min(512, model.config.n_positions)
    if args.stride > model.config.n_positions:
        raise ValueError(f"--stride {args.stride} is longer than the context ({model.config.n_positions} tokens)")
    ids = tokenizer.encode(text)
    result = perplexity(
        model, ids, stride=args.stride, batch_size=args.batch_size, text=text, on_window=counter("scored", "tokens")
    )
    figures = {"file": str(args.file), "model": args.model, **result.as_dict()}
    summary = (
        f"perplexity {result.perplexity:.4f} over {result.tokens} tokens "
        f"(stride {result.stride}, context {result.context})\n"
        f"negative log-likelihood sum {result.nll_sum:.4f} nats\n"
        f"bits per byte {result.bits_per_byte:.4f} ({result.bytes} bytes); "
        f"word perplexity {result.word_perplexity:.4f} ({result.words} words)"
    )
    write_figures(figures, summary, args.json)
