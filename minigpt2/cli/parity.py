"""`minigpt2 parity MODEL`: the parity report against transformers (minigpt2/parity/ computes it).

Exit status: 0 when every figure is within its threshold, 1 when one is not, 2 when the comparison could
not run (bad arguments, a checkpoint that does not load)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import parity
from .options import Parser, add_source_options, check_json_path, counter, status

ERROR_STATUS = 2  # could not run; 1 means a figure past its threshold


def build_parser() -> argparse.ArgumentParser:
    doc = parity.__doc__
    p = Parser(
        prog="minigpt2 parity",
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="official name, hub repo org/name, or local path")
    add_source_options(p)
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON ('-' for stdout only)")
    return p


def run(args: argparse.Namespace) -> int:
    check_json_path(args.json)  # before either library loads a model
    status(f"loading {args.model} in minigpt2 and in transformers, to compare them ...")
    options = dict(dtype=args.dtype, device=args.device, revision=args.revision, base=args.base)
    report = parity.compare(args.model, **options, on_prompt=counter("compared", "prompts"))
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


def print_report(r: dict) -> None:
    print(f"minigpt2 parity: {r['model']}, {r['dtype']}, {r['device']}")
    print(f"{'prompt':9}{'tokens':>7}{'logits max':>12}{'mean':>10}{'top-1':>8}{'top-5':>8}  greedy       tokenizer")
    for name, p in r["prompts"].items():
        if "greedy_tokens" not in p:
            greedy = "(no room)"
        elif p["greedy_first_difference"] is None:
            greedy = f"same {p['greedy_tokens']}"
        else:
            greedy = f"differ @{p['greedy_first_difference']}"
        print(
            f"{name:9}{p['tokens']:7d}{p['logits_max_difference']:12.2e}{p['logits_mean_difference']:10.2e}"
            f"{p['top1_agreement']:8.1%}{p['top5_agreement']:8.1%}  {greedy:12} "
            f"{'same' if p['tokenizer_identical'] else 'DIFFERENT'}"
        )
    stream = r["residual_stream_max_difference"]
    cells = [f"{i}:{d:.1e}" for i, d in enumerate(stream[:-1])] + [f"ln_f:{stream[-1]:.1e}"]
    print("residual stream into each block, max abs difference: " + " ".join(cells))
    if r["first_drifting_layer"] is not None:
        print(f"first layer past the threshold: {cells[r['first_drifting_layer']].split(':')[0]}")
    print("PASS" if r["passed"] else "FAIL: " + "; ".join(r["failures"]))
