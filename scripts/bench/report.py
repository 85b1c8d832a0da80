"""The benchmark's figures as a table: a row per run with minigpt2 / transformers and the share of the
bound, then a line per section (load, patching, explorer), the deviations, and the targets."""

from __future__ import annotations

from .peers import GGUF_TYPES
from .sections import PATCHED_TOKENS

GB = 1e9
VARIANTS = {"minigpt2 fast": "  with fast=True", "minigpt2 compiled": "  with compile=True"}


def print_table(r: dict) -> None:
    print(f"model: {r['model']}; device {r['device']}, {r['threads']} threads, medians of {r['rounds']} rounds")
    if r.get("cpu"):
        print(f"cpu: {r['cpu']}")
    if r["decode"] or any(section in r for section in ("prefill", "batched", "beam")):
        print(f"\n{'':34}{'minigpt2':>10}{'transformers':>14}{'ratio':>8}{'of bound':>10}")
    _decode(r)
    _kernels(r)
    print_targets(r)
    if "prefill" in r:
        p = r["prefill"]
        _row(f"prefill tok/s, {p['tokens']} tokens, fp32", p["minigpt2"], p["transformers"])
    for batch, b in r.get("batched", {}).items():
        _rows(f"batched decode tok/s, batch {batch}, fp32", b)
    if "beam" in r:
        _rows(f"beam search tok/s, {r['beam']['num_beams']} beams, fp32", r["beam"])
    if "scoring" in r:
        sc = r["scoring"]
        _row(f"perplexity tok/s, stride {sc['stride']}, fp32", sc["minigpt2"], sc["transformers"])
    _multitoken(r)
    _batches(r)
    _against_fp32(r)
    _patching_and_explorer(r)
    _assisted(r)
    for name, load in r.get("load", {}).items():
        _load(name, load, r["weight_bytes"][name])
    _deviations(r)
    _train(r)


def _row(label, ours, theirs, bound=None):
    of_bound = f"{ours / bound:9.0%}" if bound else ""
    print(f"{label:34}{ours:10.2f}{theirs:14.2f}{ours / theirs:7.2f}x{of_bound:>10}")


def _rows(label, figures, bound=None):
    _row(label, figures["minigpt2"], figures["transformers"], bound)
    for variant, variant_label in VARIANTS.items():
        if variant in figures:
            _row(variant_label, figures[variant], figures["transformers"], bound)


def _decode(r: dict) -> None:
    for name, d in r["decode"].items():
        _rows(f"decode tok/s, batch 1, {name}", d, d["bound"])
    llama = r.get("llama.cpp", {})
    for kind in GGUF_TYPES:
        if kind in llama:
            fp32 = r["decode"]["float32"]["transformers"] if "float32" in r["decode"] else float("nan")
            _row(f"llama.cpp {kind.upper()}", llama[kind]["tokens_per_s"], fp32, llama[kind]["bound"])
    if llama.get("note"):
        print(f"  {llama['note']}")
    if not r["decode"]:
        return
    probes = ", ".join(f"{probe} {rate / GB:.1f}" for probe, rate in r["probes_bytes_per_s"].items())
    print(
        f"  bound: bytes per token / {r['bandwidth_bytes_per_s'] / GB:.1f} GB/s, the fastest read in the same "
        f"rounds ({probes} GB/s){'; ' + r['probe_note'] if r.get('probe_note') else ''}; transformers' column: "
        "fp32 for the int8 and llama.cpp rows"
    )
    sizes = [f"{name} {r['weight_bytes'][name] / GB:.2f}" for name in r["decode"]]
    sizes += [
        f"llama.cpp {kind.upper()} {llama[kind]['weight_bytes'] / GB:.2f}" for kind in GGUF_TYPES if kind in llama
    ]
    print(f"  GB read per token: {', '.join(sizes)}")


def _kernels(r: dict) -> None:
    """fast=True's kernels, as this CPU measured them (machine.py's record), beside the rows they made."""
    for name, lines in r.get("kernels", {}).items():
        print(f"  fast=True's kernels in {name} on this CPU ({r.get('cpu', '?')}), per matrix shape:")
        for line in lines:
            print(f"    {line}")


def _multitoken(r: dict) -> None:
    """One cached forward of k new tokens after the prefill: ms at k = 1, then each k's cost against it."""
    if "multitoken" not in r:
        return
    ks = list(next(iter(r["multitoken"].values()))["ms"])
    print(
        f"\nk new tokens in one cached pass, cost against k = 1:\n{'':34}{'k=1 ms':>10}"
        + "".join(f"{f'k={k}':>8}" for k in ks[1:])
    )
    for mode, f in r["multitoken"].items():
        print(f"{mode:34}{f['ms'][ks[0]]:10.1f}" + "".join(f"{f['ratio'][k]:7.2f}x" for k in ks[1:]))


def _batches(r: dict) -> None:
    batched = r.get("batched", {})
    first = next(iter(batched.values()), None)
    for batch, b in batched.items():
        fast = f" ({b['minigpt2 fast'] / first['minigpt2 fast']:.2f}x with fast=True)" if "minigpt2 fast" in b else ""
        print(f"  batch {batch}: {b['minigpt2'] / first['minigpt2']:.2f}x minigpt2's smallest batch{fast}")


def _against_fp32(r: dict) -> None:
    if "float32" not in r["decode"]:
        return
    fp32_reference = r["decode"]["float32"]["transformers"]
    for name, d in r["decode"].items():
        for variant in ("minigpt2", *VARIANTS):
            if variant in d:
                print(f"  {name} decode, {variant}: {d[variant] / fp32_reference:.2f}x transformers' fp32 decode")


def _patching_and_explorer(r: dict) -> None:
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


def _assisted(r: dict) -> None:
    for mode, figures in r.get("assisted", {}).items():
        rates, acceptance = figures["tokens_per_s"], figures["acceptance"]
        plain = rates["plain greedy"]
        print(f"\nassisted greedy decoding, batch 1, {mode} (plain greedy {plain:.1f} tok/s):")
        for name, accepted in acceptance.items():
            ratio = rates[name] / plain
            verdict = "faster" if ratio > 1 else "slower: plain decoding wins here"
            print(
                f"  {name:<20} {rates[name]:8.1f} tok/s  {ratio:5.2f}x plain ({verdict}); "
                f"{accepted['accepted']:.0%} of drafts accepted, {accepted['tokens_per_pass']:.2f} tokens a pass"
            )
        if "transformers prompt lookup" in rates:
            theirs = rates["transformers prompt lookup"] / rates["transformers plain greedy"]
            print(
                f"  transformers' prompt lookup {rates['transformers prompt lookup']:.1f} tok/s, {theirs:.2f}x its "
                f"plain greedy ({rates['transformers plain greedy']:.1f}); minigpt2's lookup gains "
                f"{rates['prompt lookup'] / plain:.2f}x"
            )


def _load(name: str, load: dict, weights: int) -> None:
    ours, theirs = load["minigpt2"], load["transformers"]
    for phase in ("seconds", "seconds_with_first_forward"):
        print(
            f"load {name}{' + first forward' if phase != 'seconds' else ''}: {ours[phase]:.3f} s vs "
            f"{theirs[phase]:.3f} s ({ours[phase] / theirs[phase]:.2f}x)"
        )
    for phase in ("peak_rss_loading", "peak_rss_first_forward"):
        print(
            f"  {phase.replace('_', ' ')}: {ours[phase] / GB:.2f} GB vs {theirs[phase] / GB:.2f} GB "
            f"({ours[phase] / weights:.2f}x vs {theirs[phase] / weights:.2f}x the {name} weights)"
        )
    if "minigpt2 fast" in load:  # the fast layout's price: a copy of every weight at load
        laid_out = load["minigpt2 fast"]
        print(
            f"  with fast=True (oneDNN's layout): {laid_out['seconds']:.3f} s to load, "
            f"{laid_out['seconds_with_first_forward']:.3f} s with the first forward, peak "
            f"{laid_out['peak_rss_first_forward'] / GB:.2f} GB"
        )


def _train(r: dict) -> None:
    """tokens/s of the trainer against transformers' loop, bf16's gain over fp32, and the peak memory."""
    for shape, by_dtype in r.get("train", {}).items():
        for dtype, t in by_dtype.items():
            if "skipped" in t:
                print(f"train tok/s, {shape} shape, {dtype}: not timed, {t['skipped']}")
                continue
            rates, memory = t["tokens_per_s"], t["peak_memory"]
            _row(f"train tok/s, {shape} shape, {dtype}", rates["minigpt2"], rates["transformers"])
            print(
                f"  peak memory: minigpt2 {memory['minigpt2'] / 2**20:.0f} MiB, transformers "
                f"{memory['transformers'] / 2**20:.0f} MiB"
            )
        if all("tokens_per_s" in by_dtype.get(d, {}) for d in ("float32", "bfloat16")):
            gain = by_dtype["bfloat16"]["tokens_per_s"]["minigpt2"] / by_dtype["float32"]["tokens_per_s"]["minigpt2"]
            print(f"  bf16 autocast: {gain:.2f}x minigpt2's fp32 training on the {shape} shape")


def _deviations(r: dict) -> None:
    deviations = [
        (f"minigpt2 {what} vs minigpt2 float32", d[key])
        for name, d in r["decode"].items()
        for key, what in (("deviation", name), ("deviation_fast", f"{name} with fast=True"))
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
    """The speed targets, met or not, on this run's figures: each fast mode at least its llama.cpp peer,
    and no fast mode slower than the default it speeds up."""
    llama, decode = r.get("llama.cpp", {}), r["decode"]
    checks = []
    if "int8" in decode and "q8_0" in llama:
        checks.append(("int8 vs llama.cpp Q8_0", decode["int8"]["minigpt2"] / llama["q8_0"]["tokens_per_s"], 1.1))
    if "int8" in decode:
        checks.append(("int8 of its bound", decode["int8"]["minigpt2"] / decode["int8"]["bound"], 0.6))
    for name, kind in (("float32", "f32"), ("bfloat16", "bf16")):
        row = decode.get(name, {})
        if row and kind in llama:
            variant = "minigpt2 fast" if "minigpt2 fast" in row else "minigpt2"
            label = f"{name}{' with fast=True' if variant != 'minigpt2' else ''} vs llama.cpp {kind.upper()}"
            checks.append((label, row[variant] / llama[kind]["tokens_per_s"], 1.0))
        if "minigpt2 fast" in row:
            checks.append((f"{name} with fast=True vs the default", row["minigpt2 fast"] / row["minigpt2"], 1.0))
    for what, value, target in checks:
        slower = " (slower than the default)" if what.endswith("vs the default") and value < 1 else ""
        print(
            f"  target {what}: {value:.2f} (at least {target:.2f}: {'met' if value >= target else 'not met'}){slower}"
        )
