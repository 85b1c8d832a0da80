"""The benchmark's assisted section: greedy assisted decoding with four drafts against plain greedy, in the
exact default, with fast=True and in bf16, on two prompts: one that repeats a passage (what prompt lookup
is for) and a few random tokens; and transformers' own prompt lookup against its plain greedy, in fp32.
Random weights make acceptance a matter of the prompt: a random model does not copy a passage, and
random models of some shapes agree with each other (each tends to repeat its input), others do not."""

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


def assisted_section(path: str, ours32, dtypes: list[str], prompts: dict, new_tokens: int, folder: Path, rounds: int):
    """{"mode, prompt": {"tokens_per_s": {run: rate}, "acceptance": {draft: figures}}} for each mode: fp32
    (ours32, the model the benchmark loaded), fp32 with fast=True (on a CPU), bf16 (if asked for), and each
    of prompts {name: ids}; fp32 also times transformers' lookup and plain greedy."""
    device = ours32.wte.weight.device
    modes = {"float32": {}}
    if device.type == "cpu":
        modes["float32, fast=True"] = dict(fast=True)
    if "bfloat16" in dtypes:
        modes["bfloat16"] = dict(dtype="bfloat16")
    figures, small = {}, None
    for mode, options in modes.items():
        model = ours32 if mode == "float32" else GPT2.from_pretrained(path, device=device, **options)
        small = small or _small_drafts(model.config, folder)
        drafts = assisted_drafts(model, [GPT2.from_pretrained(p, device=device, **options) for p in small])
        reference = reference_model(resolve(path), device=device) if mode == "float32" else None
        for name, prompt in prompts.items():
            runs, acceptance = assisted_runs(model, prompt, new_tokens, drafts, reference)
            label = f"{mode}, {name}"
            figures[label] = {"tokens_per_s": median_rates(runs, rounds, progress=f"assisted, {label}")}
            figures[label]["acceptance"] = acceptance
    return figures


def repeated_passage(prompt_fn, context: int, new_tokens: int) -> torch.Tensor:
    """A passage, the passage again, and its first 8 tokens: a prompt that repeats itself, 40-token passages
    where the context has room."""
    length = max(2, min(40, (context - new_tokens - 8) // 2))
    passage = prompt_fn(1, length)
    return torch.cat([passage, passage, passage[:, :8]], dim=1)


def _small_drafts(config, folder: Path) -> list[Path]:
    """Two random models of the target's vocabulary: a quarter of its depth at three quarters of its heads
    (the head size kept: distilgpt2's shape for gpt2-medium's), and 2 blocks of 128."""
    heads = max(1, config.n_head * 3 // 4)
    shapes = [(max(1, config.n_layer // 4), heads * config.head_dim, heads), (2, 128, 2)]
    return [
        write_checkpoint(
            folder / f"draft-{n_layer}x{n_embd}",
            vocab_size=config.vocab_size,
            n_positions=config.n_positions,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
        )
        for n_layer, n_embd, n_head in shapes
    ]


def assisted_drafts(model, small: list) -> dict:
    """The drafts measured, as generate() options: the target's own first quarter of blocks with its head;
    each unrelated small random model of the same vocabulary; prompt lookup."""
    first = copy.deepcopy(model)
    first.h = first.h[: max(1, model.config.n_layer // 4)]
    first.config = dataclasses.replace(model.config, n_layer=len(first.h))
    drafts = {f"first {len(first.h)} blocks": dict(assistant_model=first, **DRAFT_OPTIONS)}
    for draft in small:
        drafts[f"unrelated {draft.config.n_layer}x{draft.config.n_embd}"] = dict(assistant_model=draft, **DRAFT_OPTIONS)
    return drafts | {"prompt lookup": dict(prompt_lookup_num_tokens=LOOKUP_TOKENS)}


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
