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

import llama_peer  # noqa: E402
from make_checkpoint import train_tokenizer, write_checkpoint  # noqa: E402
from parity import reference_greedy  # noqa: E402
from read_bandwidth import c_read_probe  # noqa: E402
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
if which.startswith("minigpt2"):
    from minigpt2 import GPT2
    import minigpt2.checkpoint  # imported lazily by from_pretrained; transformers imports its loaders up front
    load = lambda: GPT2.from_pretrained(path, dtype=dtype, contiguous=which.endswith("contiguous"))
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
    """The bytes a decode step reads: every parameter but the position embedding (one row of it), or for
    quantize="int8" the int8 projections and LM head with their scales, and the rest but the two
    embeddings (of which only rows are looked up)."""
    if model.head is None:
        return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n != "wpe.weight")
    rest = sum(
        p.numel() * p.element_size() for n, p in model.named_parameters() if n not in ("wte.weight", "wpe.weight")
    )
    int8 = [model.head, *(m.weight for m in model.modules() if isinstance(getattr(m, "weight", None), Int8Weight))]
    return rest + sum(w.q.numel() + 4 * w.scale.numel() for w in int8)


def bandwidth_probes(n_bytes: int, device) -> tuple[dict, str | None]:
    """Runs for median_rates that read an fp32 matrix of n_bytes once and return the bytes read, and why
    the C probe is missing (or None).

    "C read loop" (the CPU): a threaded C loop that only reads (read_bandwidth.py), the honest bound;
    "mv": torch.mv, the matrix-vector product the bound is usually probed with; "linear":
    minigpt2's product with oneDNN allowed (on the CPU; elsewhere the default), on a matrix in the
    order it reads fastest; "sum": a plain reduction. The bound is the fastest of them.
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

    probes = {
        "mv": probe(lambda: torch.mv(matrix, vector)),
        "linear": probe(lambda: linear(vector[None], matrix)),
        "sum": probe(matrix.sum),
    }
    why_not = "on the GPU, torch's probes" if device.type != "cpu" else None
    if device.type == "cpu":
        c_loop, why_not = c_read_probe(n_bytes, torch.get_num_threads())
        if c_loop is not None:
            probes["C read loop"] = c_loop
    return probes, why_not


def decode_runs(ours, reference, prompt, new_tokens: int, *, fast=None, compile=False) -> dict:
    """Greedy generation of exactly new_tokens per row by both, and by minigpt2's opt-in fast paths
    if asked (fast: the model to run inside onednn_matmuls()); each run returns the tokens made.
    The first run, a warm-up, is where compiling happens."""

    def ours_run(model=ours, onednn=False, **options):
        def run():
            with onednn_matmuls(onednn):
                return model.generate(prompt, max_new_tokens=new_tokens, **options).numel() - prompt.numel()

        return run

    runs = {
        "minigpt2": ours_run(),
        "transformers": lambda: reference_greedy(reference, prompt, new_tokens).numel() - prompt.numel(),
    }
    if fast is not None:
        runs["minigpt2 oneDNN"] = ours_run(fast, onednn=True)
    if compile:
        try:
            ours.generate(prompt, max_new_tokens=2, compile=True)  # compiles once, for the whole context
            runs["minigpt2 compiled"] = ours_run(compile=True)
        except Exception as e:  # a model torch.compile cannot take: say so, and measure the rest
            print(f"compile=True failed, left out of the table: {type(e).__name__}: {e}", file=sys.stderr)
    return runs


def beam_runs(ours, reference, prompt, new_tokens: int, num_beams: int, *, fast=None) -> dict:
    """Beam search adding exactly new_tokens to each prompt (eos held back) by both, and by minigpt2 with
    oneDNN if asked (fast: the model to run so); runs return the tokens added."""
    eos = ours.config.eos_token_id
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=num_beams, eos_token_id=eos)

    def ours_run(model=ours, onednn=False):
        def run():
            with onednn_matmuls(onednn):
                return model.generate(prompt, **options)[:, prompt.size(1) :].numel()

        return run

    def theirs_run():
        with torch.inference_mode():
            out = reference.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, **options)
        return out[:, prompt.size(1) :].numel()

    runs = {"minigpt2": ours_run(), "transformers": theirs_run}
    if fast is not None:
        runs["minigpt2 oneDNN"] = ours_run(fast, onednn=True)
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
    libraries = ("minigpt2", "transformers") + (("minigpt2 contiguous",) if dtype == "float32" else ())
    for which in libraries:
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


def deviation(exact_logits, approx_logits, exact_tokens: list[int], approx_tokens: list[int]) -> dict:
    """How far an approximation is from its exact model, as issue 13 asks: the largest logit difference
    relative to the exact logits' range, top-1 agreement over every position, and how many greedy
    tokens agree before the first that differs."""
    exact_logits, approx_logits = exact_logits.float(), approx_logits.float()
    relative = ((approx_logits - exact_logits).abs().max() / (exact_logits.max() - exact_logits.min())).item()
    top1 = (approx_logits.argmax(-1) == exact_logits.argmax(-1)).float().mean().item()
    match = next(
        (i for i, (a, b) in enumerate(zip(exact_tokens, approx_tokens, strict=True)) if a != b), len(exact_tokens)
    )
    return {
        "max_logit_difference_of_range": relative,
        "top1_agreement": top1,
        "greedy_match_length": match,
        "tokens_compared": len(exact_tokens),
    }


def minigpt2_deviation(exact, approx, prompt, new_tokens: int, *, onednn: bool = False) -> dict:
    """`approx` (a lower precision, int8, or oneDNN's rounding) against minigpt2's default fp32: logits over
    the prompt and fp32's greedy continuation, computed as the decode loop does, and greedy tokens."""
    with torch.inference_mode():
        exact_tokens = exact.generate(prompt, max_new_tokens=new_tokens)
        with onednn_matmuls(onednn):
            approx_tokens = approx.generate(prompt, max_new_tokens=new_tokens)[0, prompt.size(1) :].tolist()
            approx_logits = decoded_logits(approx, exact_tokens, prompt.size(1))
        exact_logits = decoded_logits(exact, exact_tokens, prompt.size(1))
    return deviation(exact_logits, approx_logits, exact_tokens[0, prompt.size(1) :].tolist(), approx_tokens)


def decoded_logits(model, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """[T, V] logits at every position of ids [1, T], as the loop computes them: the prompt in one
    forward pass, then one token at a time through the KV cache (the few-row products of decoding)."""
    cache = model.new_cache(1, ids.size(1))
    rows = [model(ids[:, :prompt_len], cache)[0]]
    rows += [model(ids[:, t : t + 1], cache)[0] for t in range(prompt_len, ids.size(1))]
    return torch.cat(rows)


def llama_deviation(files: dict, kind: str, prompt, new_tokens: int, threads: int) -> dict:
    """llama.cpp's `kind` (Q8_0, BF16) against its own F32 on the same checkpoint, measured as for minigpt2."""
    exact, approx = (llama_peer.Peer(files[k], threads, logits_all=True) for k in ("f32", kind))
    ids = prompt[0].tolist()
    exact_tokens = exact.greedy(ids, new_tokens)
    sequence = ids + exact_tokens
    figures = deviation(exact.logits(sequence), approx.logits(sequence), exact_tokens, approx.greedy(ids, new_tokens))
    del exact, approx
    return figures


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

    sections = args.sections
    results["weight_bytes"] = {"float32": weight_bytes(ours32)}
    fp32_sections = {"prefill", "batched", "beam"} & sections
    # oneDNN's products are a CPU path, fast on fp32 weights laid out [out, in] (contiguous=True)
    wants_fast = device.type == "cpu" and (fp32_sections or "decode" in sections)
    fast = GPT2.from_pretrained(path, contiguous=True) if wants_fast else None
    if "decode" in sections:
        prompts = prompt(1, PROMPT_TOKENS), prompt(1, PROMPT_TOKENS)
        results |= decode_figures(path, ours32, fast, dtypes, *prompts, args)
    reference = GPT2LMHeadModel.from_pretrained(path).to(device).eval() if fp32_sections else None
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
    del reference, fast
    if "patching" in sections:
        results["patching"] = median_rates(patching_runs(ours32, prompt(1, PATCHED_TOKENS)), args.rounds)
        results["patching"]["patches"] = ours32.config.n_layer * PATCHED_TOKENS
    if "explore" in sections:
        runs, size = explore_runs(ours32, tokenizer(path), Path(args.scratch))
        results["explore"] = {**median_rates(runs, args.rounds), "page_bytes": size, "tokens": EXPLORED_TOKENS}
    if device.type == "cpu" and "load" in sections:
        results["load"] = {name: load_figures(path, name) for name in dtypes if name in ("float32", "bfloat16")}
    return results


def decode_figures(path: str, ours32, fast32, dtypes: list[str], decode_prompt, compare_prompt, args) -> dict:
    """Batch-1 greedy decode of every dtype, transformers, llama.cpp's GGUFs and the bandwidth probes, all
    timed in the same rounds; each decode's bound for its bytes per token; and the deviations.
    fast32: fp32 laid out for oneDNN (contiguous=True), or None off the CPU."""
    device = ours32.wte.weight.device
    threads = torch.get_num_threads()
    probes, probe_note = bandwidth_probes(weight_bytes(ours32), device)
    models, references, runs = {}, {}, {}
    for name in dtypes:
        dtype = DTYPES.get(name, torch.float32)  # int8: quantized projections, the rest fp32
        quantize = "int8" if name == "int8" else None
        models[name] = (
            ours32 if name == "float32" else GPT2.from_pretrained(path, device=device, dtype=dtype, quantize=quantize)
        )
        theirs = "float32" if name == "int8" else name  # transformers has no int8: the int8 row compares with fp32
        if theirs not in references:
            references[theirs] = GPT2LMHeadModel.from_pretrained(path, dtype=DTYPES[theirs]).to(device).eval()
        fast = fast32 if name == "float32" else None
        for variant, run in decode_runs(
            models[name], references[theirs], decode_prompt, args.new_tokens, fast=fast, compile=args.compile
        ).items():
            runs[("transformers", theirs) if variant == "transformers" else (name, variant)] = run
    peer_note = llama_peer.missing() if device.type == "cpu" else "llama.cpp runs on the CPU here"
    files, peers = {}, {}
    if peer_note is None and not args.no_llama:
        files = llama_peer.write_ggufs(path, Path(args.scratch))
        peers = {kind: llama_peer.Peer(file, threads) for kind, file in files.items()}
        runs |= {("llama.cpp", kind): peer.run(decode_prompt, args.new_tokens) for kind, peer in peers.items()}
    rates = median_rates({**runs, **{("probe", name): run for name, run in probes.items()}}, args.rounds)
    probed = {name: rates[("probe", name)] for name in probes}
    bandwidth = max(probed.values())
    figures = {"bandwidth_bytes_per_s": bandwidth, "probes_bytes_per_s": probed, "probe_note": probe_note}
    figures["decode"], figures["weight_bytes"] = {}, {}
    for name, model in models.items():
        theirs = "float32" if name == "int8" else name
        row = {variant: rate for (which, variant), rate in rates.items() if which == name}
        row["transformers"] = rates[("transformers", theirs)]
        figures["weight_bytes"][name] = weight_bytes(model)
        figures["decode"][name] = {**row, "bound": bandwidth / weight_bytes(model)}
        compared = compare_prompt, args.compare_tokens
        if name != "float32":
            figures["decode"][name]["deviation"] = minigpt2_deviation(ours32, model, *compared)
        if name == "float32" and fast32 is not None:
            dev = minigpt2_deviation(ours32, fast32, *compared, onednn=True)
            figures["decode"][name]["deviation_onednn"] = dev
    figures["llama.cpp"] = {"note": peer_note or ("left out (--no-llama)" if args.no_llama else None)}
    del peers
    for kind, file in files.items():
        gguf_bytes = llama_peer.tensor_bytes(file)
        figures["llama.cpp"][kind] = {
            "tokens_per_s": rates[("llama.cpp", kind)],
            "weight_bytes": gguf_bytes,
            "bound": bandwidth / gguf_bytes,
        }
        if kind != "f32":
            figures["llama.cpp"][kind]["deviation"] = llama_deviation(files, kind, *compared, threads)
    return figures


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
    llama = r.get("llama.cpp", {})
    for kind in llama_peer.GGUF_TYPES:
        if kind in llama:
            fp32 = r["decode"]["float32"]["transformers"] if "float32" in r["decode"] else float("nan")
            row(f"llama.cpp {kind.upper()}", llama[kind]["tokens_per_s"], fp32, llama[kind]["bound"])
    if llama.get("note"):
        print(f"  {llama['note']}")
    if r["decode"]:
        probes = ", ".join(f"{probe} {rate / gb:.1f}" for probe, rate in r["probes_bytes_per_s"].items())
        print(
            f"  bound: bytes per token / {r['bandwidth_bytes_per_s'] / gb:.1f} GB/s, the fastest read in the same "
            f"rounds ({probes} GB/s){'; ' + r['probe_note'] if r.get('probe_note') else ''}; transformers' column: "
            "fp32 for the int8 and llama.cpp rows"
        )
        sizes = [f"{name} {r['weight_bytes'][name] / gb:.2f}" for name in r["decode"]]
        sizes += [
            f"llama.cpp {kind.upper()} {llama[kind]['weight_bytes'] / gb:.2f}"
            for kind in llama_peer.GGUF_TYPES
            if kind in llama
        ]
        print(f"  GB read per token: {', '.join(sizes)}")
    print_targets(r)
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
        if "minigpt2 contiguous" in load:  # the fast layout's price: a copy of every weight at load
            laid_out = load["minigpt2 contiguous"]
            print(
                f"  with contiguous=True (oneDNN's layout): {laid_out['seconds']:.3f} s to load, "
                f"{laid_out['seconds_with_first_forward']:.3f} s with the first forward, peak "
                f"{laid_out['peak_rss_first_forward'] / gb:.2f} GB"
            )
    deviations = [
        (f"minigpt2 {what} vs minigpt2 float32", d[key])
        for name, d in r["decode"].items()
        for key, what in (("deviation", name), ("deviation_onednn", f"{name} with oneDNN"))
        if key in d
    ]
    deviations += [
        (f"llama.cpp {kind.upper()} vs llama.cpp F32", figures["deviation"])
        for kind, figures in r.get("llama.cpp", {}).items()
        if isinstance(figures, dict) and "deviation" in figures
    ]
    for what, dev in deviations:
        print(
            f"{what}: max logit difference {dev['max_logit_difference_of_range']:.2g} of the logit range, top-1 "
            f"agreement {dev['top1_agreement']:.1%}, greedy tokens the same for {dev['greedy_match_length']} of "
            f"{dev['tokens_compared']}"
        )


def print_targets(r: dict) -> None:
    """Issue 13's targets, met or not, on this run's figures."""
    llama, decode = r.get("llama.cpp", {}), r["decode"]
    checks = []
    if "int8" in decode and "q8_0" in llama:
        checks.append(("int8 vs llama.cpp Q8_0", decode["int8"]["minigpt2"] / llama["q8_0"]["tokens_per_s"], 1.0))
    if "int8" in decode:
        checks.append(("int8 of its bound", decode["int8"]["minigpt2"] / decode["int8"]["bound"], 0.6))
    if "float32" in decode and "f32" in llama and "minigpt2 oneDNN" in decode["float32"]:
        fast = decode["float32"]["minigpt2 oneDNN"]
        checks.append(("fp32 with onednn_matmuls() vs llama.cpp F32", fast / llama["f32"]["tokens_per_s"], 0.9))
    if "bfloat16" in decode and "bf16" in llama:
        checks.append(("bf16 vs llama.cpp BF16", decode["bfloat16"]["minigpt2"] / llama["bf16"]["tokens_per_s"], 0.9))
    for what, value, target in checks:
        print(f"  target {what}: {value:.2f} (at least {target:.2f}: {'met' if value >= target else 'not met'})")


if __name__ == "__main__":
    sys.exit(main())
