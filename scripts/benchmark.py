"""Speed and memory of minigpt2 next to transformers, on the same checkpoint, in the same run.

Every figure is a median over interleaved rounds (minigpt2, then transformers, then again), so a
noisy machine slows both alike; ratios are minigpt2 / transformers. Without --model it builds a
gpt2-medium-shaped checkpoint in the official layout (random values) in a temporary directory.

    python scripts/benchmark.py                        # everything, gpt2-medium shape, on the CPU
    python scripts/benchmark.py --json bench.json      # the same, also written as JSON
    python scripts/benchmark.py --device cuda --compile  # on a GPU: fp32, bf16, fp16, and compile=True
    python scripts/benchmark.py --sections beam          # one section only (also: decode, prefill, batched, load)
    python scripts/benchmark.py --sections train         # training: nanoGPT's CPU recipe and the gpt2 shape

Sections: the memory bandwidth bound (the fastest of three reads of a weight-sized matrix, and
the decode rate it allows: weights' bytes / bandwidth); batch-1 greedy decode per dtype, fast=True beside
fp32 and bf16 with the kernels this CPU chose; multitoken: one cached pass of k = 1..16 new tokens against
k = 1, every mode beside transformers and llama.cpp (bench/multitoken.py); prefill
of a long prompt; batched greedy decode; beam search (4 beams by default); load time (and load +
first forward pass, which reads every weight) and peak resident memory, in a fresh process each,
from a warm file cache; how far bf16/fp16 logits and greedy tokens are from fp32; and minigpt2's
activation patching sweep (every layer x 20 positions) against one forward pass per patch; greedy
assisted decoding (the target's own first blocks, an unrelated small model, prompt lookup) against plain
greedy, with each draft's acceptance; scoring: the perplexity of 2 contexts' worth of tokens at a stride
of half the context, minigpt2's perplexity() against transformers' perplexity guide loop; and the
explorer: writing a 40-token page (minigpt2 explore) against the plain generation, and its size;
training (the train section, on shapes of its own): tokens/s of minigpt2's trainer against the same loop
over transformers' GPT2LMHeadModel, fp32 and bf16 autocast, and each one's peak memory (bench/train.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing the package

from bench.assisted import assisted_section, repeated_passage  # noqa: E402
from bench.harness import load_figures, median_rates, warm_file_cache, weight_bytes  # noqa: E402
from bench.multitoken import K_VALUES, PREFILL, multitoken_section  # noqa: E402
from bench.report import print_table  # noqa: E402
from bench.sections import (  # noqa: E402
    EXPLORED_TOKENS,
    PATCHED_TOKENS,
    beam_runs,
    decode_figures,
    decode_runs,
    explore_runs,
    patching_runs,
    prefill_runs,
    scoring_runs,
    tokenizer,
)
from bench.train import AUTOCAST as TRAIN_AUTOCAST  # noqa: E402
from bench.train import SHAPES as TRAIN_SHAPES  # noqa: E402
from bench.train import emulated_bf16, memory_figures, train_runs  # noqa: E402

from minigpt2 import GPT2, resolve  # noqa: E402
from minigpt2.loading.kernel_choice import describe_kernels  # noqa: E402
from minigpt2.machine import cpu_description  # noqa: E402
from minigpt2.parity.reference import reference_model  # noqa: E402
from minigpt2.testing.checkpoints import write_checkpoint  # noqa: E402

SECTIONS = (
    "decode",
    "multitoken",
    "prefill",
    "batched",
    "beam",
    "scoring",
    "assisted",
    "load",
    "patching",
    "explore",
    "train",
)
PROMPT_TOKENS = 8


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--model", help="checkpoint to measure (default: a random gpt2-medium-shaped one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtypes", default=None, help="comma-separated (default: float32,bfloat16,int8; +float16 on cuda)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per decode run (default: 64)")
    parser.add_argument("--prefill", type=int, default=512, help="prompt length for the prefill figure")
    parser.add_argument("--batch-sizes", default="1,4,16", help="for batched decode (default: 1,4,16)")
    parser.add_argument("--beams", type=int, default=4, help="beams for the beam search figure (default: 4)")
    parser.add_argument("--compare-tokens", type=int, default=100, help="greedy tokens compared across dtypes")
    parser.add_argument("--compile", action="store_true", help="also decode with generate(compile=True)")
    parser.add_argument("--no-llama", action="store_true", help="leave llama.cpp out even when it is installed")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, from {', '.join(SECTIONS)} (default: all; decode includes the deviations)",
    )
    parser.add_argument(
        "--train-shapes", default=",".join(TRAIN_SHAPES), help=f"for the train section, from {', '.join(TRAIN_SHAPES)}"
    )
    parser.add_argument("--train-steps", type=int, default=5, help="optimizer steps a timed train run (default: 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    args.sections = set(args.sections.split(","))
    if not args.sections <= set(SECTIONS):
        parser.error(f"--sections takes {', '.join(SECTIONS)}, got {', '.join(sorted(args.sections))}")
    device = torch.device(args.device)
    dtypes = (args.dtypes or "float32,bfloat16,int8" + (",float16" if device.type == "cuda" else "")).split(",")

    with tempfile.TemporaryDirectory() as scratch:
        args.scratch = scratch
        if args.sections - {"train"}:
            path = args.model or str(write_checkpoint(Path(scratch), shape="gpt2-medium"))
            results = measure(path, device, dtypes, args)
        else:
            results = {"device": str(device), "threads": torch.get_num_threads(), "rounds": args.rounds, "decode": {}}
            results["cpu"] = cpu_description()
        if "train" in args.sections:
            results["train"] = train_figures(dtypes, args)
    results["model"] = args.model or "gpt2-medium shape (random values, official layout)"
    if not args.sections - {"train"}:
        results["model"] = "the train section's shapes (random values)"
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def measure(path: str, device, dtypes: list[str], args) -> dict:
    results = {"device": str(device), "threads": torch.get_num_threads(), "rounds": args.rounds, "decode": {}}
    results["cpu"] = cpu_description()
    generator = torch.Generator().manual_seed(0)
    ours32 = GPT2.from_pretrained(path, device=device)
    vocab = ours32.config.vocab_size

    def prompt(batch, length):
        return torch.randint(0, vocab - 1, (batch, length), generator=generator).to(device)

    sections = args.sections
    results["weight_bytes"] = {"float32": weight_bytes(ours32)}
    fp32_sections = {"prefill", "batched", "beam", "scoring"} & sections
    # fast=True is a CPU path: the kernels this machine measured fastest, on weights laid out [out, in]
    wants_fast = device.type == "cpu" and (fp32_sections or {"decode", "multitoken"} & sections)
    fast = GPT2.from_pretrained(path, fast=True) if wants_fast else None
    fast_models = {"float32": fast} if fast is not None else {}
    if fast is not None and "bfloat16" in dtypes and {"decode", "multitoken"} & sections:
        fast_models["bfloat16"] = GPT2.from_pretrained(path, fast=True, dtype="bfloat16")
    if "decode" in sections:
        prompts = prompt(1, PROMPT_TOKENS), prompt(1, PROMPT_TOKENS)
        results |= decode_figures(path, ours32, fast_models, dtypes, *prompts, args)
        results["kernels"] = {name: describe_kernels(model) for name, model in fast_models.items()}
    if "multitoken" in sections:
        k_prompt = prompt(1, PREFILL + K_VALUES[-1])
        results["multitoken"] = multitoken_section(path, ours32, fast_models, dtypes, k_prompt, args)
    del fast_models
    reference = reference_model(resolve(path), device=device) if fp32_sections else None
    if "prefill" in sections:
        long_prompt = prompt(1, min(args.prefill, ours32.config.n_positions))
        results["prefill"] = median_rates(prefill_runs(ours32, reference, long_prompt), args.rounds)
        results["prefill"]["tokens"] = long_prompt.size(1)
    if "batched" in sections:
        results["batched"] = {}
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            runs = decode_runs(ours32, reference, prompt(batch, PROMPT_TOKENS), args.new_tokens // 2, fast=fast)
            results["batched"][batch] = median_rates(runs, args.rounds)
    if "beam" in sections:
        runs = beam_runs(ours32, reference, prompt(1, PROMPT_TOKENS), args.new_tokens // 2, args.beams, fast=fast)
        results["beam"] = {**median_rates(runs, args.rounds), "num_beams": args.beams}
    if "scoring" in sections:
        ids = prompt(1, 2 * ours32.config.n_positions)[0].tolist()
        stride = ours32.config.n_positions // 2
        results["scoring"] = {
            **median_rates(scoring_runs(ours32, reference, ids, stride), args.rounds),
            "stride": stride,
        }
        results["scoring"]["tokens"] = len(ids)
    del reference, fast
    if "assisted" in sections:
        prompts = {
            "a repeated passage": repeated_passage(prompt, ours32.config.n_positions, args.new_tokens),
            f"{PROMPT_TOKENS} random tokens": prompt(1, PROMPT_TOKENS),
        }
        scratch = Path(args.scratch)
        results["assisted"] = assisted_section(path, ours32, dtypes, prompts, args.new_tokens, scratch, args.rounds)
    if "patching" in sections:
        results["patching"] = median_rates(patching_runs(ours32, prompt(1, PATCHED_TOKENS)), args.rounds)
        results["patching"]["patches"] = ours32.config.n_layer * PATCHED_TOKENS
    if "explore" in sections:
        runs, size = explore_runs(ours32, tokenizer(path), Path(args.scratch))
        results["explore"] = {**median_rates(runs, args.rounds), "page_bytes": size, "tokens": EXPLORED_TOKENS}
    if device.type == "cpu" and "load" in sections:
        warm_file_cache(path)
        results["load"] = {name: load_figures(path, name) for name in dtypes if name in ("float32", "bfloat16")}
    return results


def train_figures(dtypes: list[str], args) -> dict:
    """{shape: {dtype: tokens/s of each, and peak memory}}: the trainer's own shapes, not --model's."""
    figures = {}
    for shape in args.train_shapes.split(","):
        if shape not in TRAIN_SHAPES:
            raise SystemExit(f"benchmark.py: error: --train-shapes takes {', '.join(TRAIN_SHAPES)}, got {shape!r}")
        figures[shape] = {}
        for dtype in (d for d in dtypes if d in TRAIN_AUTOCAST):
            if emulated_bf16(shape, dtype):
                figures[shape][dtype] = {"skipped": f"bf16 is emulated on this CPU ({cpu_description()})"}
                continue
            label = f"train, {shape} shape, {dtype}"
            runs = train_runs(shape, dtype, Path(args.scratch), args.train_steps)
            rates = median_rates(runs, args.rounds, progress=label)
            print(f"{label}: peak memory, in fresh processes", file=sys.stderr, flush=True)
            figures[shape][dtype] = {"tokens_per_s": rates, "peak_memory": memory_figures(shape, dtype)}
    return figures


if __name__ == "__main__":
    sys.exit(main())
