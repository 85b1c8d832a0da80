"""Does minigpt2 compute what transformers computes on this checkpoint, and where does it start to differ?

Loads MODEL into both (an official name, a hub repo org/name, or a local path) and compares, over
a fixed set of prompts (English, Korean, code, and a long one near the context limit):

  - logits: max and mean abs difference;
  - the residual stream into every block and after the final LayerNorm, so a drift shows at its layer;
  - top-1 and top-5 agreement of the next-token predictions at every position;
  - greedy continuations of up to 100 tokens: identical, or the first token where they diverge;
  - token ids from both tokenizers.

Exit status: 0 when every figure is within its threshold, 1 when one is not, 2 when the
comparison could not run (bad arguments, a checkpoint that does not load).

    minigpt2 parity gpt2-medium
    minigpt2 parity ./my-finetuned-gpt2 --dtype bfloat16 --json parity.json
    minigpt2 parity distilgpt2 --device cuda
    minigpt2 parity x.pth --base skt/kogpt2-base-v2          # a state dict over its base
    minigpt2 parity out/ckpt.pt                              # nanoGPT (llm.c's .bin likewise)
    minigpt2 parity ./my-lora                                # a PEFT adapter: against PeftModel

transformers reads the same files where it can (a checkpoint folder; a LoRA adapter through peft's
PeftModel over the base). A file only minigpt2 reads (a state dict outside its folder's standard name,
nanoGPT's, llm.c's) is compared in transformers' model holding the weights minigpt2 read: the report then
checks the computation, and tests/loading/test_finetunes.py the reading.

Needs transformers, the reference: pip install "minigpt2[parity]".
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..checkpoint import resolve
from ..loading import LoadOptions, load_model, tokenizer_checkpoint
from ..model import GPT2
from ..tokenizer import Tokenizer

PROMPTS = {
    "english": "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "korean": "옛날 옛적에 바닷가 작은 마을에 늙은 어부가 살았습니다. 그는 매일 아침",
    "code": 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n',
}
LONG_PROMPT_MARGIN = 8  # the long prompt stops this many tokens short of the context
GREEDY_TOKENS = 100

# Thresholds per dtype: logits within atol + rtol * (largest logit); agreement at least as given;
# greedy continuations identical only in fp32 (in half precision, near-ties may go either way).
THRESHOLDS = {
    "float32": {"atol": 1e-4, "rtol": 1e-5, "top1": 0.99, "top5": 0.95, "greedy_identical": True},
    "bfloat16": {"atol": 0.0, "rtol": 5e-2, "top1": 0.80, "top5": 0.50, "greedy_identical": False},
    "float16": {"atol": 0.0, "rtol": 1e-2, "top1": 0.90, "top5": 0.70, "greedy_identical": False},
}


def compare(
    model: str,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    revision: str | None = None,
    base=None,
    on_prompt: Callable[[int, int], None] | None = None,
) -> dict:
    """The whole report as a dictionary (what --json writes). Both libraries read the same resolved files.
    base: the base checkpoint of a weights file or a LoRA adapter (as from_pretrained's).
    on_prompt(prompts compared so far, prompts in all): called after each, e.g. for a progress bar."""
    from .reference import reference_model, reference_tokenizer  # transformers, only when a comparison runs

    options = LoadOptions(device=device, dtype=dtype)
    checkpoint = resolve(model, revision, base=base)
    ours = load_model(checkpoint, options, GPT2)
    theirs = reference_model(checkpoint, options.dtype, options.device, ours)
    tokenizer_files = tokenizer_checkpoint(checkpoint, ours)
    tokenizer = Tokenizer.from_checkpoint(tokenizer_files)
    their_tokenizer = reference_tokenizer(tokenizer_files, byte_level=tokenizer.kind == "gpt2-byte-level")
    device = options.device
    limits = THRESHOLDS[dtype]

    prompts = dict(PROMPTS)
    context = ours.config.n_positions
    long_ids = tokenizer.encode(" ".join(PROMPTS.values()) * (context // 8 + 1))[: context - LONG_PROMPT_MARGIN]
    prompts["long"] = tokenizer.decode(long_ids)

    report = {"model": model, "dtype": dtype, "device": str(device), "thresholds": limits, "prompts": {}}
    # Max difference of the residual stream into each block (then after ln_f), and its largest value there.
    layers = [0.0] * (ours.config.n_layer + 1)
    scale = [0.0] * (ours.config.n_layer + 1)
    for n, (name, text) in enumerate(prompts.items(), 1):
        ids = tokenizer.encode(text)
        theirs_ids = their_tokenizer.encode(text)
        input_ids = torch.tensor([ids[: context - LONG_PROMPT_MARGIN]], device=device)
        entry = {"tokens": input_ids.size(1), "tokenizer_identical": ids == theirs_ids}
        entry.update(_logits_and_stream(ours, theirs, input_ids, layers, scale))
        if input_ids.size(1) + 1 < context:
            entry.update(_greedy(ours, theirs, input_ids, min(GREEDY_TOKENS, context - input_ids.size(1))))
        report["prompts"][name] = entry
        if on_prompt is not None:
            on_prompt(n, len(prompts))
    report["residual_stream_max_difference"] = layers
    drifting = [
        i for i, (d, s) in enumerate(zip(layers, scale, strict=True)) if d > limits["atol"] + limits["rtol"] * s
    ]
    report["first_drifting_layer"] = drifting[0] if drifting else None  # n_layer means after ln_f
    report["failures"] = _failures(report, limits)
    report["passed"] = not report["failures"]
    return report


@torch.inference_mode()
def _logits_and_stream(ours, theirs, input_ids, layers: list[float], scale: list[float]) -> dict:
    L = ours.config.n_layer
    names = [f"blocks.{i}.hook_resid_pre" for i in range(L)] + ["ln_final.hook_normalized"]
    logits, acts = ours.run_with_cache(input_ids, names=names)
    out = theirs(input_ids, output_hidden_states=True)
    for i, (a, b) in enumerate(zip(acts.values(), out.hidden_states, strict=True)):
        layers[i] = max(layers[i], (a.float() - b.float()).abs().max().item())
        scale[i] = max(scale[i], b.float().abs().max().item())
    ours_logits, theirs_logits = logits[0].float(), out.logits[0].float()
    difference = (ours_logits - theirs_logits).abs()
    top5_ours, top5_theirs = ours_logits.topk(5).indices, theirs_logits.topk(5).indices
    return {
        "logits_max_difference": difference.max().item(),
        "logits_mean_difference": difference.mean().item(),
        "largest_logit": theirs_logits.abs().max().item(),
        "top1_agreement": (top5_ours[:, 0] == top5_theirs[:, 0]).float().mean().item(),
        "top5_agreement": (top5_ours.sort().values == top5_theirs.sort().values).all(-1).float().mean().item(),
    }


def _greedy(ours, theirs, input_ids, new_tokens: int) -> dict:
    from .reference import reference_greedy

    mine = ours.generate(input_ids, max_new_tokens=new_tokens)[0, input_ids.size(1) :]
    reference = reference_greedy(theirs, input_ids, new_tokens)[0, input_ids.size(1) :]
    differ = (mine != reference).nonzero()
    return {"greedy_tokens": new_tokens, "greedy_first_difference": int(differ[0]) if differ.numel() else None}


def _failures(report: dict, limits: dict) -> list[str]:
    failures = []
    if report["first_drifting_layer"] is not None:
        failures.append(f"the residual stream drifts from block {report['first_drifting_layer']} on")
    for name, p in report["prompts"].items():
        allowed = limits["atol"] + limits["rtol"] * p["largest_logit"]
        if p["logits_max_difference"] > allowed:
            failures.append(f"{name}: logits differ by {p['logits_max_difference']:.2e} > {allowed:.2e}")
        for k in ("top1", "top5"):
            if p[f"{k}_agreement"] < limits[k]:
                failures.append(f"{name}: {k} agreement {p[f'{k}_agreement']:.1%} < {limits[k]:.0%}")
        if limits["greedy_identical"] and p.get("greedy_first_difference") is not None:
            failures.append(f"{name}: greedy continuations diverge at token {p['greedy_first_difference']}")
        if not p["tokenizer_identical"]:
            failures.append(f"{name}: the tokenizers disagree")
    return failures
