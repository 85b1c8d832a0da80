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
import json
import math
import subprocess

import pytest
import torch
from checkpoint_kinds import make_adapter, nanogpt_checkpoint, random_gpt2
from conftest import TINY_INIT, read_page, run_cli

from minigpt2 import GPT2, CheckpointError, load, parity
from minigpt2.scoring import loglikelihood, multiple_choice, perplexity
from minigpt2.testing.checkpoints import SAMPLE_TEXTS, write_checkpoint

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


# ---- the commands ----

CACHE = {"cache": (True, False)}
TYPES = {"type": ("f32", "f16", "bf16", "q8_0")}
COMMAND_FACTORS = {  # what each command takes, beside the checkpoint kind
    "generate": {**MODES, **CACHE},
    "explore": MODES,
    "perplexity": MODES,
    "multiple-choice": MODES,
    "lm_eval": MODES,
    "parity": {"dtype": MODES["dtype"]},
    "export": TYPES,
}
PROMPT, NEW_TOKENS = "Once upon a time", 6
CHOICES = [
    {"context": "Once upon a time", "endings": ["there was a cat", "the end", "and then"], "label": 0},
    {"context": "The cat sat", "endings": ["on the mat", "down", "quietly on the floor"], "label": 1},
]


def all_pairs(factors: dict[str, tuple]) -> list[dict]:
    """Cases that between them hold every value of each factor beside every value of each other factor
    (greedy: each case the one of the whole product that covers the most pairs not yet covered)."""
    names = list(factors)
    product = [dict(zip(names, values)) for values in itertools.product(*factors.values())]

    def pairs(case):
        return {((a, case[a]), (b, case[b])) for a, b in itertools.combinations(names, 2)}

    uncovered = set().union(*map(pairs, product))
    cases = []
    while uncovered:
        best = max(product, key=lambda case: len(pairs(case) & uncovered))
        cases.append(best)
        uncovered -= pairs(best)
    return cases


def test_all_pairs_covers_every_pair_with_fewer_cases_than_the_product():
    factors = {"kind": KINDS, **MODES, **CACHE}
    cases = all_pairs(factors)
    for (a, xs), (b, ys) in itertools.combinations(factors.items(), 2):
        assert {(x, y) for x in xs for y in ys} <= {(c[a], c[b]) for c in cases}
    assert len(cases) < len(list(itertools.product(*factors.values()))) / 4


@pytest.fixture(scope="module")
def api(kinds):
    """(kind, dtype, quantize, fast) -> (model, tokenizer) from minigpt2.load, each loaded once."""
    loaded = {}

    def get(kind, dtype="float32", quantize=None, fast=False):
        key = kind, dtype, quantize, fast
        if key not in loaded:
            path, base = kinds[kind]
            loaded[key] = load(path, base=base, dtype=dtype, quantize=quantize, fast=fast)
        return loaded[key]

    return get


def mode_flags(case: dict) -> list[str]:
    flags = ["--dtype", case["dtype"]] if "dtype" in case else []
    flags += ["--quantize", case["quantize"]] if case.get("quantize") else []
    flags += ["--fast"] if case.get("fast") else []
    return flags + (["--no-cache"] if case.get("cache") is False else [])


def model_flags(kinds, kind) -> list[str]:
    path, base = kinds[kind]
    return ["--model", str(path)] + (["--base", str(base)] if base else [])


def run_generate(case, kinds, api, tmp_path):
    result = run_cli(PROMPT, *model_flags(kinds, case["kind"]), "--max-new-tokens", str(NEW_TOKENS), *mode_flags(case))
    model, tokenizer = api(case["kind"], case["dtype"], case["quantize"], case["fast"])
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    expected = tokenizer.decode(model.generate(ids, max_new_tokens=NEW_TOKENS, use_cache=case["cache"])[0].tolist())
    return result, lambda: expected in result.stdout, "the API's tokens"


def run_explore(case, kinds, api, tmp_path):
    page = tmp_path / "page.html"
    args = ("explore", PROMPT, *model_flags(kinds, case["kind"]), "--max-new-tokens", "4", "-o", str(page))
    result = run_cli(*args, *mode_flags(case))
    model, tokenizer = api(case["kind"], case["dtype"], case["quantize"], case["fast"])
    expected = model.generate(torch.tensor([tokenizer.encode(PROMPT)]), max_new_tokens=4)[0].tolist()
    return result, lambda: read_page(page.read_text())["tokens"] == expected, "the API's tokens"


def run_perplexity(case, kinds, api, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(SAMPLE_TEXTS[:4]))
    args = ("perplexity", str(text), *model_flags(kinds, case["kind"]), "--stride", "64", "--json", "-")
    result = run_cli(*args, *mode_flags(case))
    model, tokenizer = api(case["kind"], case["dtype"], case["quantize"], case["fast"])
    expected = perplexity(model, tokenizer.encode(text.read_text()), stride=64).perplexity
    return result, lambda: math.isclose(json.loads(result.stdout)["perplexity"], expected, rel_tol=1e-9), "the API's"


def run_choice(case, kinds, api, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in CHOICES))
    args = ("multiple-choice", str(questions), *model_flags(kinds, case["kind"]), "--json", "-")
    result = run_cli(*args, *mode_flags(case))
    model, tokenizer = api(case["kind"], case["dtype"], case["quantize"], case["fast"])
    expected = multiple_choice(model, tokenizer, CHOICES).sum_losses
    return result, lambda: json.loads(result.stdout)["sum_losses"] == expected, "the API's losses"


def run_lm_eval(case, kinds, api, tmp_path):
    from lm_eval.api.instance import Instance

    from minigpt2.lm_eval import MiniGPT2LM

    path, base = kinds[case["kind"]]
    options = dict(dtype=case["dtype"], quantize=case["quantize"], fast=case["fast"])
    requests = [Instance("loglikelihood", {}, (q["context"], " " + q["endings"][0]), 0) for q in CHOICES]
    try:
        got = MiniGPT2LM(str(path), base=str(base) if base else None, device="cpu", **options).loglikelihood(
            requests, disable_tqdm=True
        )
        result = subprocess.CompletedProcess("lm_eval", 0, "", "")
    except (ValueError, CheckpointError) as refused:
        return subprocess.CompletedProcess("lm_eval", 1, "", f"{refused}\n"), None, ""
    model, tokenizer = api(case["kind"], **options)
    pairs = [(tokenizer.encode(q["context"]), tokenizer.encode(" " + q["endings"][0])) for q in CHOICES]
    expected = loglikelihood(model, pairs, batch_size=1)  # lm-eval's batch: int8's products round by rows
    return result, lambda: got == expected, "the API's log-likelihoods"


def run_parity(case, kinds, api, tmp_path):
    result = run_cli("parity", *model_flags(kinds, case["kind"])[1:], "--dtype", case["dtype"], "--json", "-")
    return result, lambda: json.loads(result.stdout)["passed"], "transformers' figures"


def run_export(case, kinds, api, tmp_path):
    pytest.importorskip("gguf", reason="needs the gguf package (the test and export extras)")
    from gguf import GGUFReader

    from minigpt2.gguf import _tensors as gguf_tensors

    out = tmp_path / "model.gguf"
    result = run_cli("export", *model_flags(kinds, case["kind"])[1:], "--gguf", str(out), "--type", case["type"])
    model, _ = api(case["kind"])
    names = {name for name, _ in gguf_tensors(model)}
    return result, lambda: {t.name for t in GGUFReader(out).tensors} == names, "every tensor"


RUNNERS = {
    "generate": run_generate,
    "explore": run_explore,
    "perplexity": run_perplexity,
    "multiple-choice": run_choice,
    "lm_eval": run_lm_eval,
    "parity": run_parity,
    "export": run_export,
}


@pytest.mark.parametrize("command", list(RUNNERS))
def test_every_command_over_every_pair_of_options(command, kinds, api, tmp_path, monkeypatch):
    """Each case exits 0 with what the Python API gives in that mode (whose distance from fp32 the first
    test bounds), or fails in one line on stderr, without a traceback."""
    if command == "lm_eval":
        pytest.importorskip("lm_eval", reason='lm-eval is not installed (pip install "minigpt2[eval]")')
    monkeypatch.setattr(parity, "GREEDY_TOKENS", 3)  # transformers generate()s slowly; the parity tests check 100
    rows = []
    for n, case in enumerate(all_pairs({"kind": tuple(kinds), **COMMAND_FACTORS[command]})):
        folder = tmp_path / str(n)
        folder.mkdir()
        result, check, what = RUNNERS[command](case, kinds, api, folder)
        lines = result.stderr.strip().splitlines()
        if result.returncode == 0:
            rows.append((*case.values(), f"works: the same as {what}"))
            assert check(), (case, result.stdout[-500:])
        else:
            rows.append((*case.values(), f"refused: {result.stderr.strip()}"))
            assert len(lines) == 1 and "Traceback" not in result.stderr, (case, result.stderr)
    print_table(("kind", *COMMAND_FACTORS[command], command), rows)
