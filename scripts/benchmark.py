"""Speed and memory of minigpt2 next to transformers, on the same checkpoint, in the same run.

Every figure is a median over interleaved rounds (minigpt2, then transformers, then again), so a
noisy machine slows both alike; ratios are minigpt2 / transformers. Without --model it builds a
gpt2-medium-shaped checkpoint in the official layout (random values) in a temporary directory.

    python scripts/benchmark.py                        # everything, gpt2-medium shape, on the CPU
    python scripts/benchmark.py --json bench.json      # the same, also written as JSON
    python scripts/benchmark.py --device cuda --compile  # on a GPU: fp32, bf16, fp16, and compile=True
    python scripts/benchmark.py --sections beam          # one section only (also: decode, prefill, batched, load)

Sections: the memory bandwidth bound (the fastest of three reads of a weight-sized matrix, and
the decode rate it allows: weights' bytes / bandwidth); batch-1 greedy decode per dtype; prefill
of a long prompt; batched greedy decode; beam search (4 beams by default); load time (and load +
first forward pass, which reads every weight) and peak resident memory, in a fresh process each,
from a warm file cache; how far bf16/fp16 logits and greedy tokens are from fp32; and minigpt2's
activation patching sweep (every layer x 20 positions) against one forward pass per patch; and the
explorer: writing a 40-token page (minigpt2 explore) against the plain generation, and its size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing the package

from make_checkpoint import (
    train_tokenizer,  # noqa: E402
    write_checkpoint,  # noqa: E402
)
from parity import reference_greedy  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from minigpt2 import GPT2, Tokenizer  # noqa: E402
from minigpt2.checkpoint import OFFICIAL_REPOS  # noqa: E402
from minigpt2.explore import explore  # noqa: E402
from minigpt2.linear import linear, onednn_matmuls  # noqa: E402
from minigpt2.patching import activation_patching  # noqa: E402
from minigpt2.quantize import Int8Weight  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SECTIONS = ("decode", "prefill", "batched", "beam", "load", "patching", "explore")
EXPLORED_TOKENS = 40  # the explorer page's generation
PATCHED_TOKENS = 20  # the prompt of the activation patching sweep
PROMPT_TOKENS = 8

# Run in a fresh interpreter: load a checkpoint and report seconds, and peak resident memory growth
# after loading and after a first forward pass (which touches every weight).
LOAD_PROBE = """
import sys, time, torch
def rss(field):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field))
which, path, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
if which == "minigpt2":
    from minigpt2 import GPT2
    import minigpt2.checkpoint  # imported lazily by from_pretrained; transformers imports its loaders up front
    load = lambda: GPT2.from_pretrained(path, dtype=dtype)
else:
    from transformers import GPT2LMHeadModel
    load = lambda: GPT2LMHeadModel.from_pretrained(path, dtype=dtype)
before = rss("VmRSS:")
started = time.perf_counter()
model = load()
seconds = time.perf_counter() - started
peak_loading = rss("VmHWM:") - before  # safetensors are memory-mapped: pages come in at first use
with torch.inference_mode():
    model(torch.tensor([[0, 1, 2, 3]]))
print(seconds, time.perf_counter() - started, peak_loading, rss("VmHWM:") - before)
"""


def median_rates(runs: dict, rounds: int) -> dict:
    """{name: fn() -> work done} -> {name: median work per second}, timing the entries in turn each round."""
    for fn in runs.values():
        fn()  # warm-up
    rates = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            sync()
            started = time.perf_counter()
            work = fn()
            sync()
            rates[name].append(work / (time.perf_counter() - started))
    return {name: statistics.median(r) for name, r in rates.items()}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def weight_bytes(model) -> int:
    """The bytes a decode step reads: every parameter, or for quantize="int8" the int8 projections and LM
    head with their scales, and the rest but the token embedding (of which only rows are looked up)."""
    if model.head is None:
        return sum(p.numel() * p.element_size() for p in model.parameters())
    rest = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n != "wte.weight")
    int8 = [model.head, *(m.weight for m in model.modules() if isinstance(getattr(m, "weight", None), Int8Weight))]
    return rest + sum(w.q.numel() + 4 * w.scale.numel() for w in int8)


def bandwidth_probes(n_bytes: int, device) -> dict:
    """Runs for median_rates that read an fp32 matrix of n_bytes once and return the bytes read.

    "mv": torch.mv, the matrix-vector product the bound is usually probed with; "linear":
    minigpt2's product with oneDNN allowed (on the CPU; elsewhere the default), on a matrix in the
    order it reads fastest; "sum": a plain reduction, reading and nothing else. The bound is the
    fastest of the three.
    """
    columns = 1024
    matrix = torch.randn(n_bytes // 4 // columns, columns, device=device)
    vector = torch.randn(columns, device=device)
    read = matrix.numel() * 4

    def probe(kernel):
        def run():
            with torch.inference_mode(), onednn_matmuls():
                kernel()
            return read

        return run

    return {
        "mv": probe(lambda: torch.mv(matrix, vector)),
        "linear": probe(lambda: linear(vector[None], matrix)),
        "sum": probe(matrix.sum),
    }


def decode_runs(ours, reference, prompt, new_tokens: int, *, onednn=False, compile=False) -> dict:
    """Greedy generation of exactly new_tokens per row by both, and by minigpt2's opt-in fast paths
    if asked; each run returns the tokens made. The first run, a warm-up, is where compiling happens."""

    def ours_run(onednn=False, **options):
        def run():
            with onednn_matmuls(onednn):
                return ours.generate(prompt, max_new_tokens=new_tokens, **options).numel() - prompt.numel()

        return run

    runs = {
        "minigpt2": ours_run(),
        "transformers": lambda: reference_greedy(reference, prompt, new_tokens).numel() - prompt.numel(),
    }
    if onednn:
        runs["minigpt2 oneDNN"] = ours_run(onednn=True)
    if compile:
        try:
            ours.generate(prompt, max_new_tokens=2, compile=True)  # compiles once, for the whole context
            runs["minigpt2 compiled"] = ours_run(compile=True)
        except Exception as e:  # a model torch.compile cannot take: say so, and measure the rest
            print(f"compile=True failed, left out of the table: {type(e).__name__}: {e}", file=sys.stderr)
    return runs


def beam_runs(ours, reference, prompt, new_tokens: int, num_beams: int, *, onednn=False) -> dict:
    """Beam search adding exactly new_tokens to each prompt (eos held back) by both, and by minigpt2 with
    oneDNN if asked; runs return the tokens added."""
    eos = ours.config.eos_token_id
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=num_beams, eos_token_id=eos)

    def ours_run(onednn=False):
        def run():
            with onednn_matmuls(onednn):
                return ours.generate(prompt, **options)[:, prompt.size(1) :].numel()

        return run

    def theirs_run():
        with torch.inference_mode():
            out = reference.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, **options)
        return out[:, prompt.size(1) :].numel()

    runs = {"minigpt2": ours_run(), "transformers": theirs_run}
    if onednn:
        runs["minigpt2 oneDNN"] = ours_run(onednn=True)
    return runs


def patching_runs(model, clean: torch.Tensor) -> dict:
    """The resid_pre sweep over every layer and position, batched; and the plain way, one patched forward
    pass per patch, for the positions of one layer. Runs return the patches done."""
    corrupted = clean.clone()
    corrupted[0, clean.size(1) // 2] = (clean[0, clean.size(1) // 2] + 1) % model.config.vocab_size

    def metric(logits):
        return logits[:, 0] - logits[:, 1]

    def sweep():
        return activation_patching(model, clean, corrupted, metric, point="resid_pre").numel()

    name = f"blocks.{model.config.n_layer // 2}.hook_resid_pre"
    _, acts = model.run_with_cache(clean, [name])

    def one_forward_per_patch():
        for position in range(clean.size(1)):

            def patch(x, position=position):
                x = x.clone()
                x[:, position] = acts[name][:, position]
                return x

            with torch.inference_mode():
                metric(model(corrupted, hooks={name: patch})[:, -1])
        return clean.size(1)

    return {"batched sweep": sweep, "one forward per patch": one_forward_per_patch}


def explore_runs(model, tokenizer, folder: Path) -> tuple[dict, int]:
    """The plain greedy generation of EXPLORED_TOKENS, and the same generation written as an explorer
    page; runs return the tokens generated. Also the page's size in bytes."""
    options = dict(max_new_tokens=EXPLORED_TOKENS, min_new_tokens=EXPLORED_TOKENS)
    ids = torch.tensor([tokenizer.encode("Once upon a time")], device=model.wte.weight.device)
    sizes = []

    def generate():
        with torch.inference_mode():
            model.generate(ids, eos_token_id=tokenizer.eos_token_id, **options)
        return EXPLORED_TOKENS

    def write_page():
        sizes.append(explore(model, tokenizer, "Once upon a time", **options).save(folder / "page.html"))
        return EXPLORED_TOKENS

    write_page()
    return {"generate": generate, "explore": write_page}, sizes[0]


def prefill_runs(ours, reference, prompt) -> dict:
    def run(model):
        def forward():
            with torch.inference_mode():
                model(prompt)
            return prompt.numel()

        return forward

    return {"minigpt2": run(ours), "transformers": run(reference)}


def load_figures(path: str, dtype: str) -> dict:
    """Seconds and peak memory growth of each library's from_pretrained, in fresh processes (second of two runs)."""
    figures = {}
    for which in ("minigpt2", "transformers"):
        for _ in range(2):  # the first run warms the file cache
            done = subprocess.run(
                [sys.executable, "-c", LOAD_PROBE, which, path, dtype], capture_output=True, text=True, check=True
            )
        seconds, with_forward, peak_loading, peak_forward = (float(x) for x in done.stdout.split()[-4:])
        figures[which] = {
            "seconds": seconds,
            "seconds_with_first_forward": with_forward,
            "peak_rss_loading": peak_loading,
            "peak_rss_first_forward": peak_forward,
        }
    return figures


def deviation(ours32, approx, prompt, new_tokens: int, *, onednn: bool = False) -> dict:
    """How far `approx` (a lower precision, or oneDNN's rounding) is from minigpt2's default fp32:
    max logit difference relative to the largest logit, and greedy tokens."""
    with torch.inference_mode():
        exact = ours32(prompt)
        with onednn_matmuls(onednn):
            approx_logits = approx(prompt).float()
    relative = ((approx_logits - exact).abs().max() / exact.abs().max()).item()
    exact_tokens = ours32.generate(prompt, max_new_tokens=new_tokens)[0, prompt.size(1) :]
    with onednn_matmuls(onednn):
        approx_tokens = approx.generate(prompt, max_new_tokens=new_tokens)[0, prompt.size(1) :]
    differ = (exact_tokens != approx_tokens).nonzero()
    return {
        "max_logit_difference_relative": relative,
        "greedy_tokens_identical": differ.numel() == 0,
        "first_different_token": None if differ.numel() == 0 else int(differ[0]),
        "tokens_compared": new_tokens,
    }


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
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, from {', '.join(SECTIONS)} (default: all; decode includes the deviations)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    args.sections = set(args.sections.split(","))
    if not args.sections <= set(SECTIONS):
        parser.error(f"--sections takes {', '.join(SECTIONS)}, got {', '.join(sorted(args.sections))}")
    transformers_logging.disable_progress_bar()
    device = torch.device(args.device)
    dtypes = (args.dtypes or "float32,bfloat16,int8" + (",float16" if device.type == "cuda" else "")).split(",")

    with tempfile.TemporaryDirectory() as scratch:
        path = args.model or str(write_checkpoint(Path(scratch), shape="gpt2-medium"))
        args.scratch = scratch
        results = measure(OFFICIAL_REPOS.get(path, path) if args.model else path, device, dtypes, args)
    results["model"] = args.model or "gpt2-medium shape (random values, official layout)"
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def measure(path: str, device, dtypes: list[str], args) -> dict:
    results = {"device": str(device), "threads": torch.get_num_threads(), "rounds": args.rounds, "decode": {}}
    generator = torch.Generator().manual_seed(0)
    ours32 = GPT2.from_pretrained(path, device=device)
    vocab = ours32.config.vocab_size

    def prompt(batch, length):
        return torch.randint(0, vocab - 1, (batch, length), generator=generator).to(device)

    probe_bytes = weight_bytes(ours32)
    probes = bandwidth_probes(probe_bytes, device)  # timed in the same rounds as the decodes they bound
    sections = args.sections
    results["weight_bytes"] = {}
    for name in dtypes:
        dtype = DTYPES.get(name, torch.float32)  # int8: quantized projections, the rest fp32
        ours = GPT2.from_pretrained(path, device=device, dtype=dtype, quantize="int8" if name == "int8" else None)
        reference = GPT2LMHeadModel.from_pretrained(path, dtype=dtype).to(device).eval()  # int8: against fp32
        results["weight_bytes"][name] = weight_bytes(ours)
        onednn = name == "float32" and device.type == "cpu"  # the only place oneDNN's products are used
        if "decode" in sections:
            runs = decode_runs(
                ours, reference, prompt(1, PROMPT_TOKENS), args.new_tokens, onednn=onednn, compile=args.compile
            )
            rates = median_rates({**runs, **probes}, args.rounds)
            probed = {probe: rates.pop(probe) for probe in probes}
            bandwidth = max(probed.values())
            results.setdefault("bandwidth_bytes_per_s", bandwidth)  # the first dtype's rounds
            results["decode"][name] = {
                **rates,
                "bound": bandwidth / weight_bytes(ours),
                "bandwidth_bytes_per_s": bandwidth,
                "probes_bytes_per_s": probed,
            }
            compared = prompt(1, PROMPT_TOKENS), args.compare_tokens
            if onednn:
                results["decode"][name]["deviation_onednn"] = deviation(ours32, ours32, *compared, onednn=True)
            if name != "float32":
                results["decode"][name]["deviation"] = deviation(ours32, ours, *compared)
        if name == "float32" and "prefill" in sections:
            long_prompt = prompt(1, min(args.prefill, ours.config.n_positions))
            results["prefill"] = median_rates(prefill_runs(ours, reference, long_prompt), args.rounds)
            results["prefill"]["tokens"] = long_prompt.size(1)
        if name == "float32" and "batched" in sections:
            results["batched"] = {}
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                runs = decode_runs(ours, reference, prompt(batch, PROMPT_TOKENS), args.new_tokens // 2, onednn=onednn)
                results["batched"][batch] = median_rates(runs, args.rounds)
        if name == "float32" and "beam" in sections:
            runs = beam_runs(ours, reference, prompt(1, PROMPT_TOKENS), args.new_tokens // 2, args.beams, onednn=onednn)
            results["beam"] = {**median_rates(runs, args.rounds), "num_beams": args.beams}
        del ours, reference
    if "patching" in sections:
        results["patching"] = median_rates(patching_runs(ours32, prompt(1, PATCHED_TOKENS)), args.rounds)
        results["patching"]["patches"] = ours32.config.n_layer * PATCHED_TOKENS
    if "explore" in sections:
        runs, size = explore_runs(ours32, tokenizer(path), Path(args.scratch))
        results["explore"] = {**median_rates(runs, args.rounds), "page_bytes": size, "tokens": EXPLORED_TOKENS}
    if device.type == "cpu" and "load" in sections:
        results["load"] = {name: load_figures(path, name) for name in dtypes if name in ("float32", "bfloat16")}
    return results


def tokenizer(path: str) -> Tokenizer:
    """The checkpoint's tokenizer, or for one without (a random checkpoint) a small BPE trained here."""
    try:
        return Tokenizer.from_pretrained(path)
    except (OSError, ValueError):
        folder = Path(tempfile.mkdtemp())
        train_tokenizer(folder, 1000)
        return Tokenizer.from_pretrained(str(folder))


def print_table(r: dict) -> None:
    gb = 1e9
    print(f"model: {r['model']}; device {r['device']}, {r['threads']} threads, medians of {r['rounds']} rounds")
    if r["decode"] or any(section in r for section in ("prefill", "batched", "beam")):
        print(f"\n{'':34}{'minigpt2':>10}{'transformers':>14}{'ratio':>8}{'of bound':>10}")

    def row(label, ours, theirs, bound=None):
        of_bound = f"{ours / bound:9.0%}" if bound else ""
        print(f"{label:34}{ours:10.2f}{theirs:14.2f}{ours / theirs:7.2f}x{of_bound:>10}")

    variants = {"minigpt2 oneDNN": "  with onednn_matmuls()", "minigpt2 compiled": "  with compile=True"}

    def rows(label, figures, bound=None):
        row(label, figures["minigpt2"], figures["transformers"], bound)
        for variant, variant_label in variants.items():
            if variant in figures:
                row(variant_label, figures[variant], figures["transformers"], bound)

    for name, d in r["decode"].items():
        rows(f"decode tok/s, batch 1, {name}", d, d["bound"])
    for name, d in r["decode"].items():
        probes = ", ".join(f"{probe} {rate / gb:.1f}" for probe, rate in d["probes_bytes_per_s"].items())
        print(
            f"  bound for {name}: {d['bound']:.2f} tok/s ({r['weight_bytes'][name] / gb:.2f} GB of weights at "
            f"{d['bandwidth_bytes_per_s'] / gb:.1f} GB/s, the fastest probe in the same rounds: {probes} GB/s)"
        )
    if "prefill" in r:
        p = r["prefill"]
        row(f"prefill tok/s, {p['tokens']} tokens, fp32", p["minigpt2"], p["transformers"])
    for batch, b in r.get("batched", {}).items():
        rows(f"batched decode tok/s, batch {batch}, fp32", b)
    if "beam" in r:
        rows(f"beam search tok/s, {r['beam']['num_beams']} beams, fp32", r["beam"])
    first = next(iter(r.get("batched", {}).values()), None)
    for batch, b in r.get("batched", {}).items():
        print(
            f"  batch {batch}: {b['minigpt2'] / first['minigpt2']:.2f}x minigpt2's smallest batch"
            + (
                f" ({b['minigpt2 oneDNN'] / first['minigpt2 oneDNN']:.2f}x with oneDNN)"
                if "minigpt2 oneDNN" in b
                else ""
            )
        )
    if "float32" in r["decode"]:
        fp32_reference = r["decode"]["float32"]["transformers"]
        for name, d in r["decode"].items():
            for variant in ("minigpt2", *variants):
                if variant in d:
                    print(f"  {name} decode, {variant}: {d[variant] / fp32_reference:.2f}x transformers' fp32 decode")
    if "patching" in r:
        p = r["patching"]
        batched, plain = p["patches"] / p["batched sweep"], p["patches"] / p["one forward per patch"]
        print(
            f"activation patching, resid_pre, {p['patches']} patches (every layer x {PATCHED_TOKENS} positions): "
            f"{batched:.1f} s batched, {plain:.1f} s with one forward pass per patch ({plain / batched:.1f}x)"
        )
    if "explore" in r:
        e = r["explore"]
        generate, page = e["tokens"] / e["generate"], e["tokens"] / e["explore"]
        print(
            f"explorer page, {e['tokens']} tokens: written in {page:.2f} s, {page / generate:.2f}x the plain "
            f"generation ({generate:.2f} s); {e['page_bytes'] / 1e6:.2f} MB"
        )
    for name, load in r.get("load", {}).items():
        ours, theirs = load["minigpt2"], load["transformers"]
        weights = r["weight_bytes"][name]
        for phase in ("seconds", "seconds_with_first_forward"):
            print(
                f"load {name}{' + first forward' if phase != 'seconds' else ''}: {ours[phase]:.3f} s vs "
                f"{theirs[phase]:.3f} s ({ours[phase] / theirs[phase]:.2f}x)"
            )
        for phase in ("peak_rss_loading", "peak_rss_first_forward"):
            print(
                f"  {phase.replace('_', ' ')}: {ours[phase] / gb:.2f} GB vs {theirs[phase] / gb:.2f} GB "
                f"({ours[phase] / weights:.2f}x vs {theirs[phase] / weights:.2f}x the {name} weights)"
            )
    for name, d in r["decode"].items():
        for key, what in (("deviation", name), ("deviation_onednn", f"{name} with oneDNN")):
            if key in d:
                dev = d[key]
                first_different = dev["first_different_token"]
                same = "identical" if dev["greedy_tokens_identical"] else f"differ from token {first_different}"
                print(
                    f"{what} vs float32: max logit difference {dev['max_logit_difference_relative']:.1e} of the "
                    f"largest logit; greedy tokens over {dev['tokens_compared']}: {same}"
                )


if __name__ == "__main__":
    sys.exit(main())
