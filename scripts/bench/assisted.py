"""The benchmark's assisted section: greedy assisted decoding with three kinds of draft against plain greedy."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from minigpt2 import GPT2
from minigpt2.testing.checkpoints import write_checkpoint


def assisted_drafts(model, folder: Path) -> dict:
    """The drafts the assisted section measures, as generate() options: the target's own first quarter of
    blocks with its head; an unrelated random small GPT-2 of the same vocabulary; prompt lookup."""
    first = copy.deepcopy(model)
    first.h = first.h[: max(1, model.config.n_layer // 4)]
    first.config = dataclasses.replace(model.config, n_layer=len(first.h))
    shape = dict(
        vocab_size=model.config.vocab_size, n_positions=model.config.n_positions, n_layer=2, n_embd=128, n_head=2
    )
    small = write_checkpoint(folder / "small-draft", **shape)
    unrelated = GPT2.from_pretrained(small, device=model.wte.weight.device)
    return {
        f"first {len(first.h)} blocks": dict(assistant_model=first),
        "unrelated 2-block": dict(assistant_model=unrelated),
        "prompt lookup": dict(prompt_lookup_num_tokens=10),
    }


def assisted_runs(model, prompt, new_tokens: int, drafts: dict) -> tuple[dict, dict]:
    """Plain greedy and greedy with each draft, new_tokens each (eos held back); runs return the tokens
    made. Also each draft's acceptance: drafts accepted / drafted, and tokens per pass of the model."""
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
    return {"plain greedy": run(), **{name: run(**extra) for name, extra in drafts.items()}}, acceptance
