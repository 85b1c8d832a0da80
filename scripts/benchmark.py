"""Decode speed of minigpt2 next to transformers, on the same checkpoint, in the same run.

Batch 1, greedy, a short prompt: each round times both implementations one after the other
(interleaved, so a noisy machine slows both alike) and the medians are reported. Without
--model it builds a gpt2-medium-shaped checkpoint in the official layout (random values) in a
temporary directory.

    python scripts/benchmark.py                      # gpt2-medium shape, fp32, 5 rounds
    python scripts/benchmark.py --model gpt2 --rounds 3 --new-tokens 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing the package

from make_checkpoint import write_checkpoint  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

from minigpt2 import GPT2  # noqa: E402
from minigpt2.checkpoint import OFFICIAL_REPOS  # noqa: E402

PROMPT_TOKENS = 8


def tokens_per_second(generate, new_tokens: int) -> float:
    started = time.perf_counter()
    out = generate()
    elapsed = time.perf_counter() - started
    assert out.size(1) - PROMPT_TOKENS == new_tokens, "generation stopped early; the rate would be wrong"
    return new_tokens / elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint to measure (default: a random gpt2-medium-shaped one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        path = args.model or str(write_checkpoint(Path(scratch), shape="gpt2-medium"))
        ours = GPT2.from_pretrained(path)
        reference = GPT2LMHeadModel.from_pretrained(OFFICIAL_REPOS.get(path, path)).eval()
        prompt = torch.randint(
            0, ours.config.vocab_size - 1, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0)
        )
        n = args.new_tokens

        def run_ours():
            return ours.generate(prompt, max_new_tokens=n)

        def run_reference():
            with torch.inference_mode():
                return reference.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=n,
                    min_new_tokens=n,
                    do_sample=False,
                    pad_token_id=0,
                )

        run_ours(), run_reference()  # warm-up
        rates = {"minigpt2": [], "transformers": []}
        for _ in range(args.rounds):
            rates["minigpt2"].append(tokens_per_second(run_ours, n))
            rates["transformers"].append(tokens_per_second(run_reference, n))

    median = {name: statistics.median(r) for name, r in rates.items()}
    print(f"decode, batch 1, greedy, fp32, {n} new tokens, {args.rounds} rounds, {torch.get_num_threads()} threads")
    print(f"model: {args.model or 'gpt2-medium shape (random, official layout)'}")
    for name, r in rates.items():
        print(f"  {name:<13} {median[name]:6.2f} tokens/s (median; rounds: {', '.join(f'{x:.2f}' for x in r)})")
    print(f"  ratio minigpt2 / transformers: {median['minigpt2'] / median['transformers']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
