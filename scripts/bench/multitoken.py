"""The benchmark's multitoken section (issue 34's premise): the cost of one cached forward pass of k new
tokens after a prefill, against k = 1, for each of minigpt2's modes, transformers, and llama.cpp's eval of
k tokens on GGUFs of the same checkpoint. Assisted decoding, prompt lookup, beams and small batches win
only where checking k tokens costs about one step. Every k of every mode is timed in the same rounds."""

from __future__ import annotations

from pathlib import Path

import torch

from minigpt2 import resolve
from minigpt2.loading import DTYPES
from minigpt2.parity.reference import reference_model

from . import peers
from .harness import median_rates
from .sections import minigpt2_in

K_VALUES = (1, 2, 4, 8, 16)
PREFILL = 64


def minigpt2_step(model, prompt: torch.Tensor, k: int):
    """A run: the prefill once, then each call rolls the cache back to it and feeds k new tokens."""
    cache = model.new_cache(1, PREFILL + k)
    new = prompt[:, PREFILL : PREFILL + k]
    with torch.inference_mode():
        model(prompt[:, :PREFILL], cache)

    def run():
        cache.rollback(PREFILL)
        with torch.inference_mode():
            model(new, cache)
        return k

    return run


def transformers_step(reference, prompt: torch.Tensor, k: int):
    """The same on transformers' GPT2LMHeadModel: its DynamicCache cropped back to the prefill each call."""
    with torch.inference_mode():
        past = reference(prompt[:, :PREFILL], use_cache=True).past_key_values
    new = prompt[:, PREFILL : PREFILL + k]

    def run():
        if extra := past.get_seq_length() - PREFILL:
            past.crop(-extra)  # this transformers crops by a negative count: the tokens to drop
        with torch.inference_mode():
            reference(new, past_key_values=past, use_cache=True)
        return k

    return run


def llama_step(peer: peers.Peer, prompt: torch.Tensor, k: int):
    """llama.cpp: eval of the prefill once, then each call resets to it (eval drops the cache past n_tokens)."""
    ids = prompt[0].tolist()
    peer.llm.reset()
    peer.llm.eval(ids[:PREFILL])

    def run():
        peer.llm.n_tokens = PREFILL
        peer.llm.eval(ids[PREFILL : PREFILL + k])
        return k

    return run


def multitoken_figures(ours: dict, references: dict, llama: dict, prompt: torch.Tensor, rounds: int) -> dict:
    """{mode: {"ms": {k: ms a step}, "ratio": {k: ms / ms at k = 1}}} for ours {mode: model},
    references {mode: transformers model} and llama {mode: peers.Peer}."""
    runs = {}
    for mode, model in ours.items():
        runs |= {(mode, k): minigpt2_step(model, prompt, k) for k in K_VALUES}
    for mode, reference in references.items():
        runs |= {(mode, k): transformers_step(reference, prompt, k) for k in K_VALUES}
    for mode, peer in llama.items():
        runs |= {(mode, k): llama_step(peer, prompt, k) for k in K_VALUES}
    figures = {mode: {"ms": {}, "ratio": {}} for mode in [*ours, *references, *llama]}
    # Each run starts from its own prefill (llama.cpp's from n_tokens reset to it), so that the modes and the
    # k's can take turns in every round and all see the same noise.
    for (mode, k), rate in median_rates(runs, rounds, progress="multitoken").items():
        figures[mode]["ms"][k] = k / rate * 1e3
    for f in figures.values():
        f["ratio"] = {k: f["ms"][k] / f["ms"][1] for k in K_VALUES}
    return figures


def multitoken_section(path: str, ours32, fast: dict, dtypes: list[str], prompt: torch.Tensor, args) -> dict:
    """Every mode of `dtypes`, with fast {dtype: the model loaded with fast=True} beside its dtype,
    transformers in each float dtype, and llama.cpp's GGUFs where the bench extra is installed."""
    checkpoint, device = resolve(path), ours32.wte.weight.device
    ours, references, llama = {}, {}, {}
    for name in dtypes:
        ours[f"minigpt2 {name}"] = ours32 if name == "float32" else minigpt2_in(checkpoint, name, device)
        if name in fast:
            ours[f"minigpt2 {name}, fast=True"] = fast[name]
        if name in DTYPES:
            references[f"transformers {name}"] = reference_model(checkpoint, DTYPES[name], device)
    if device.type == "cpu" and peers.missing() is None and not args.no_llama:
        for kind, file in peers.write_ggufs(path, Path(args.scratch)).items():
            llama[f"llama.cpp {kind.upper()}"] = peers.Peer(file, torch.get_num_threads())
    return multitoken_figures(ours, references, llama, prompt, args.rounds)
