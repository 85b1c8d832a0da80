"""The benchmark's assisted section: greedy assisted decoding with three kinds of draft against plain greedy,
in the exact default, with fast=True and in bf16, on a prompt that repeats a passage (what prompt lookup
is for); and transformers' own prompt lookup against its plain greedy, in fp32."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from minigpt2 import GPT2, resolve
from minigpt2.parity.reference import reference_greedy, reference_model
from minigpt2.testing.checkpoints import write_checkpoint

from .harness import median_rates

LOOKUP_TOKENS = 10  # prompt lookup's drafts a round, as in transformers' examples
# A draft model's tokens a round, and no confidence threshold: random weights give flat distributions
# (a top token's probability near 1 / vocabulary), so transformers' threshold of 0.4 would end every
# round after one draft and measure the threshold, not the draft. Four, because a pass of k tokens
# costs more with each k on a CPU (the multitoken section).
DRAFT_OPTIONS = dict(num_assistant_tokens=4, assistant_confidence_threshold=0.0)


def assisted_section(path: str, dtypes: list[str], device, prompt, new_tokens: int, folder: Path, rounds: int):
    """{mode: {"tokens_per_s": {run: rate}, "acceptance": {draft: figures}}} for each mode: fp32, fp32 with
    fast=True (on a CPU), bf16 (if asked for); fp32 also times transformers' lookup and plain greedy."""
    modes = {"float32": {}}
    if device.type == "cpu":
        modes["float32, fast=True"] = dict(fast=True)
    if "bfloat16" in dtypes:
        modes["bfloat16"] = dict(dtype="bfloat16")
    figures, draft_path = {}, None
    for mode, options in modes.items():
        model = GPT2.from_pretrained(path, device=device, **options)
        draft_path = draft_path or _small_draft(model.config, folder)
        draft = GPT2.from_pretrained(draft_path, device=device, **options)
        reference = reference_model(resolve(path), device=device) if mode == "float32" else None
        runs, acceptance = assisted_runs(model, prompt, new_tokens, assisted_drafts(model, draft), reference)
        figures[mode] = {"tokens_per_s": median_rates(runs, rounds, progress=f"assisted, {mode}")}
        figures[mode]["acceptance"] = acceptance
    return figures


def repeated_passage(prompt_fn, context: int, new_tokens: int) -> torch.Tensor:
    """A passage, the passage again, and its first 8 tokens: a prompt that repeats itself, 40-token passages
    where the context has room."""
    length = max(2, min(40, (context - new_tokens - 8) // 2))
    passage = prompt_fn(1, length)
    return torch.cat([passage, passage, passage[:, :8]], dim=1)


def _small_draft(config, folder: Path) -> Path:
    """A random model a quarter of the target's depth at three quarters of its heads (the head size kept):
    distilgpt2's shape for gpt2-medium's."""
    heads = max(1, config.n_head * 3 // 4)
    shape = dict(
        vocab_size=config.vocab_size,
        n_positions=config.n_positions,
        n_layer=max(1, config.n_layer // 4),
        n_embd=heads * config.head_dim,
        n_head=heads,
    )
    return write_checkpoint(folder / "small-draft", **shape)


def assisted_drafts(model, small) -> dict:
    """The drafts measured, as generate() options: the target's own first quarter of blocks with its head;
    an unrelated small random model of the same vocabulary (small); prompt lookup."""
    first = copy.deepcopy(model)
    first.h = first.h[: max(1, model.config.n_layer // 4)]
    first.config = dataclasses.replace(model.config, n_layer=len(first.h))
    return {
        f"first {len(first.h)} blocks": dict(assistant_model=first, **DRAFT_OPTIONS),
        f"unrelated {small.config.n_layer}x{small.config.n_embd}": dict(assistant_model=small, **DRAFT_OPTIONS),
        "prompt lookup": dict(prompt_lookup_num_tokens=LOOKUP_TOKENS),
    }


def assisted_runs(model, prompt, new_tokens: int, drafts: dict, reference=None) -> tuple[dict, dict]:
    """Plain greedy and greedy with each draft, new_tokens each (eos held back), and with a reference,
    transformers' plain greedy and prompt lookup; runs return the tokens made. Also each draft's
    acceptance: drafts accepted / drafted, and tokens per pass of the model."""
    options = dict(max_new_tokens=new_tokens, eos_token_id=None)

    def run(**extra):
        return lambda: model.generate(prompt, **options, **extra).size(1) - prompt.size(1)

    acceptance = {}
    for name, extra in drafts.items():
        drafted = accepted = passes = 0
        for step in model.stream(prompt, **options, **extra):
            if step.drafted is not None:
                drafted, accepted, passes = drafted + step.drafted, accepted + step.accepted, passes + 1
        acceptance[name] = {"accepted": accepted / max(drafted, 1), "tokens_per_pass": new_tokens / passes}
    runs = {"plain greedy": run(), **{name: run(**extra) for name, extra in drafts.items()}}
    if reference is not None:

        def theirs(**extra):
            return lambda: reference_greedy(reference, prompt, new_tokens, **extra).size(1) - prompt.size(1)

        runs["transformers plain greedy"] = theirs()
        runs["transformers prompt lookup"] = theirs(prompt_lookup_num_tokens=LOOKUP_TOKENS)
    return runs, acceptance
