"""`minigpt2 multiple-choice FILE.jsonl`: HellaSwag-style accuracy, as build-nanogpt scores it."""

from __future__ import annotations

import argparse

from ..scoring import multiple_choice, parse_choices
from .options import check_json_path, counter, file_command, load_from_args, write_figures
from .perplexity import read_text

EXAMPLES = """examples:
  minigpt2 multiple-choice hellaswag_val.jsonl --model gpt2
  minigpt2 multiple-choice my-questions.jsonl --model ./my-finetune --json choice.json

Each line: {"context": "...", "endings": ["...", "..."], "label": 1} (HellaSwag's "ctx" works too).
Each ending follows its context after a space; its loss is the cross-entropy of its tokens. acc picks
the ending of lowest summed loss, acc_norm the lowest average loss per token.
"""


def build_parser() -> argparse.ArgumentParser:
    return file_command(
        "minigpt2 multiple-choice",
        "Accuracy on multiple-choice questions (JSONL), by the loss of each ending after its context.",
        EXAMPLES,
        "the questions, one JSON object per line",
    )


def run(args: argparse.Namespace) -> None:
    examples = parse_choices(read_text(args.file), args.file)  # both before a model is loaded
    check_json_path(args.json)
    model, tokenizer = load_from_args(args, doing="scoring")
    result = multiple_choice(model, tokenizer, examples, on_example=counter("scored", "examples"))
    figures = {"file": str(args.file), "model": args.model, "examples": len(examples)}
    figures |= {"acc": result.acc, "acc_norm": result.acc_norm}
    figures |= {"sum_losses": result.sum_losses, "avg_losses": result.avg_losses, "labels": result.labels}
    summary = f"acc {result.acc:.4f}, acc_norm {result.acc_norm:.4f} over {len(examples)} examples"
    write_figures(figures, summary, args.json)
