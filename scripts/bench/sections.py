"""The benchmark's sections: each builds the runs it times side by side (minigpt2, transformers, llama.cpp)
or measures what it reports (load time, peak memory, deviations)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from minigpt2 import GPT2, Tokenizer, resolve
from minigpt2.explore import explore
from minigpt2.interp.patching import activation_patching
from minigpt2.loading import DTYPES, LoadOptions, load_model
from minigpt2.parity.reference import (
    guide_perplexity,
    reference_greedy,
    reference_model,
)
from minigpt2.scoring import perplexity
from minigpt2.testing.checkpoints import train_tokenizer

from . import peers
from .harness import deviation, median_rates, minigpt2_deviation, weight_bytes

EXPLORED_TOKENS = 40  # the explorer page's generation
PATCHED_TOKENS = 20  # the prompt of the activation patching sweep


def decode_runs(ours, reference, prompt, new_tokens: int, *, fast=None, compile=False) -> dict:
    """Greedy generation of exactly new_tokens per row by both, and by minigpt2's opt-in fast paths
    if asked (fast: the model loaded with fast=True); each run returns the tokens made.
    The first run, a warm-up, is where compiling happens."""

    def ours_run(model=ours, **options):
        return lambda: model.generate(prompt, max_new_tokens=new_tokens, **options).numel() - prompt.numel()

    runs = {
        "minigpt2": ours_run(),
        "transformers": lambda: reference_greedy(reference, prompt, new_tokens).numel() - prompt.numel(),
    }
    if fast is not None:
        runs["minigpt2 fast"] = ours_run(fast)
    if compile:
        try:
            ours.generate(prompt, max_new_tokens=2, compile=True)  # compiles once, for the whole context
            runs["minigpt2 compiled"] = ours_run(compile=True)
        except Exception as e:  # a model torch.compile cannot take: say so, and measure the rest
            print(f"compile=True failed, left out of the table: {type(e).__name__}: {e}", file=sys.stderr)
    return runs


def beam_runs(ours, reference, prompt, new_tokens: int, num_beams: int, *, fast=None) -> dict:
    """Beam search adding exactly new_tokens to each prompt (eos held back) by both, and by minigpt2's fast
    kernels if asked (fast: the model loaded with fast=True); runs return the tokens added."""
    eos = ours.config.eos_token_id
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=num_beams, eos_token_id=eos)

    def ours_run(model=ours):
        return lambda: model.generate(prompt, **options)[:, prompt.size(1) :].numel()

    def theirs_run():
        with torch.inference_mode():
            out = reference.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, **options)
        return out[:, prompt.size(1) :].numel()

    runs = {"minigpt2": ours_run(), "transformers": theirs_run}
    if fast is not None:
        runs["minigpt2 fast"] = ours_run(fast)
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


def scoring_runs(ours, reference, ids: list[int], stride: int) -> dict:
    """The perplexity of ids through the sliding window: minigpt2's perplexity() and transformers' guide loop
    on the reference; runs return the tokens scored."""
    context = ours.config.n_positions
    return {
        "minigpt2": lambda: perplexity(ours, ids, stride=stride).tokens,
        "transformers": lambda: guide_perplexity(reference, ids, context, stride)[1],
    }


def prefill_runs(ours, reference, prompt) -> dict:
    def run(model):
        def forward():
            with torch.inference_mode():
                model(prompt)
            return prompt.numel()

        return forward

    return {"minigpt2": run(ours), "transformers": run(reference)}


def llama_deviation(files: dict, kind: str, prompt, new_tokens: int, threads: int) -> dict:
    """llama.cpp's `kind` (Q8_0, BF16) against its own F32 on the same checkpoint, measured as for minigpt2."""
    exact, approx = (peers.Peer(files[k], threads, logits_all=True) for k in ("f32", kind))
    ids = prompt[0].tolist()
    exact_tokens = exact.greedy(ids, new_tokens)
    sequence = ids + exact_tokens
    figures = deviation(exact.logits(sequence), approx.logits(sequence), exact_tokens, approx.greedy(ids, new_tokens))
    del exact, approx
    return figures


def decode_figures(path: str, ours32, fast: dict, dtypes: list[str], decode_prompt, compare_prompt, args) -> dict:
    """Batch-1 greedy decode of every dtype, transformers, llama.cpp's GGUFs and the bandwidth probes, all
    timed in the same rounds; each decode's bound for its bytes per token; and the deviations.
    fast: {dtype: the model loaded with fast=True in it} (none off the CPU)."""
    device = ours32.wte.weight.device
    probes, probe_note = peers.bandwidth_probes(weight_bytes(ours32), device)
    models, runs = _decode_models_and_runs(path, ours32, fast, dtypes, decode_prompt, args)
    peer_note = peers.missing() if device.type == "cpu" else "llama.cpp runs on the CPU here"
    files = {}
    if peer_note is None and not args.no_llama:
        files = peers.write_ggufs(path, Path(args.scratch))
        for kind, file in files.items():
            runs[("llama.cpp", kind)] = peers.Peer(file, torch.get_num_threads()).run(decode_prompt, args.new_tokens)
    rates = median_rates({**runs, **{("probe", name): run for name, run in probes.items()}}, args.rounds)
    runs.clear()  # the llama.cpp peers go with their runs, before the deviations load two more
    bandwidth = max(rates[("probe", name)] for name in probes)
    figures = {
        "bandwidth_bytes_per_s": bandwidth,
        "probes_bytes_per_s": {name: rates[("probe", name)] for name in probes},
        "probe_note": probe_note,
        "decode": {},
        "weight_bytes": {},
    }
    compared = compare_prompt, args.compare_tokens
    for name, model in models.items():
        row = {variant: rate for (which, variant), rate in rates.items() if which == name}
        row["transformers"] = rates[("transformers", _reference_dtype(name))]
        figures["weight_bytes"][name] = weight_bytes(model)
        figures["decode"][name] = {**row, "bound": bandwidth / weight_bytes(model)}
        if name != "float32":
            figures["decode"][name]["deviation"] = minigpt2_deviation(ours32, model, *compared)
        if name in fast:
            figures["decode"][name]["deviation_fast"] = minigpt2_deviation(ours32, fast[name], *compared)
    figures["llama.cpp"] = {"note": peer_note or ("left out (--no-llama)" if args.no_llama else None)}
    for kind, file in files.items():
        gguf_bytes = peers.tensor_bytes(file)
        figures["llama.cpp"][kind] = {
            "tokens_per_s": rates[("llama.cpp", kind)],
            "weight_bytes": gguf_bytes,
            "bound": bandwidth / gguf_bytes,
        }
        if kind != "f32":
            figures["llama.cpp"][kind]["deviation"] = llama_deviation(files, kind, *compared, torch.get_num_threads())
    return figures


def _reference_dtype(name: str) -> str:
    """transformers has no int8: the int8 row compares with fp32."""
    return "float32" if name == "int8" else name


def minigpt2_in(checkpoint, name: str, device):
    """minigpt2 in one of the benchmark's modes: a dtype's name, or int8 (quantized projections, the rest fp32)."""
    quantize = "int8" if name == "int8" else None
    return load_model(checkpoint, LoadOptions(device, None if quantize else name, quantize), GPT2)


def _decode_models_and_runs(path: str, ours32, fast: dict, dtypes: list[str], prompt, args):
    """minigpt2 in each dtype (int8: quantized projections, the rest fp32) and transformers in each dtype
    it has; their decode runs, keyed (dtype, variant) and ("transformers", dtype)."""
    device = ours32.wte.weight.device
    models, references, runs = {}, {}, {}
    checkpoint = resolve(path)
    for name in dtypes:
        models[name] = ours32 if name == "float32" else minigpt2_in(checkpoint, name, device)
        theirs = _reference_dtype(name)
        if theirs not in references:
            references[theirs] = reference_model(checkpoint, DTYPES[theirs], device)
        variants = decode_runs(
            models[name], references[theirs], prompt, args.new_tokens, fast=fast.get(name), compile=args.compile
        )
        for variant, run in variants.items():
            runs[("transformers", theirs) if variant == "transformers" else (name, variant)] = run
    return models, runs


def tokenizer(path: str) -> Tokenizer:
    """The checkpoint's tokenizer, or for one without (a random checkpoint) a small BPE trained here."""
    try:
        return Tokenizer.from_pretrained(path)
    except (OSError, ValueError):
        folder = Path(tempfile.mkdtemp())
        train_tokenizer(folder, 1000)
        return Tokenizer.from_pretrained(str(folder))
