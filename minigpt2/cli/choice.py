"""`minigpt2 multiple-choice FILE.jsonl`: HellaSwag-style accuracy, as build-nanogpt scores it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..scoring import multiple_choice, parse_example
from .options import file_command, load_from_args, write_figures
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


def read_examples(path: Path) -> list[dict]:
    examples = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not JSON ({e.msg})") from None
        if not isinstance(example, dict):
            raise ValueError(f"{path}:{n} is not a JSON object with context, endings and label")
        try:
            parse_example(example)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: the example {e}") from None
        examples.append(example)
    return examples


def run(args: argparse.Namespace) -> None:
    examples = read_examples(args.file)  # before a model is loaded
    model, tokenizer = load_from_args(args)
    result = multiple_choice(model, tokenizer, examples)
    figures = {"file": str(args.file), "model": args.model, "examples": len(examples)}
    figures |= {"acc": result.acc, "acc_norm": result.acc_norm}
    figures |= {"sum_losses": result.sum_losses, "avg_losses": result.avg_losses, "labels": result.labels}
    summary = f"acc {result.acc:.4f}, acc_norm {result.acc_norm:.4f} over {len(examples)} examples"
    write_figures(figures, summary, args.json)
