"""The loop script: continue a prompt with GPT-2, greedily (scripts/generate.py and the `minigpt2` command)."""

from __future__ import annotations

import argparse
import sys
import time

import torch
from huggingface_hub.utils import logging as hf_logging

from .checkpoint import CheckpointError
from .model import GPT2
from .tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_NEW_TOKENS = 40

EXAMPLES = """examples:
  minigpt2 "Once upon a time"
  minigpt2 "The meaning of life is" --model gpt2 --max-new-tokens 60
  minigpt2 "Hello" --model ./my-checkpoint --max-length 30 --num-return-sequences 2
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit code 2, as for every other bad input
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="minigpt2",
        description="Continue a prompt with GPT-2: greedy decoding with a KV cache, printed as text.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "prompt", nargs="?", default="Once upon a time", help='text to continue (default: "Once upon a time")'
    )
    p.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        default="gpt2-medium",
        help="official name (gpt2, gpt2-medium, ...), hub repo org/name, or local path",
    )
    p.add_argument("--revision", metavar="REV", help="hub branch, tag or commit to load (default: main)")
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--max-new-tokens", metavar="N", type=_positive_int, help=f"tokens to add (default: {DEFAULT_NEW_TOKENS})"
    )
    length.add_argument("--max-length", metavar="N", type=_positive_int, help="total length in tokens, prompt included")
    p.add_argument(
        "--num-return-sequences", metavar="K", type=_positive_int, default=1, help="rows to generate (default: 1)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' dtype (default: float32)")
    p.add_argument(
        "--no-cache", action="store_true", help="feed the whole sequence every step instead of using the KV cache"
    )
    p.add_argument(
        "--seed",
        metavar="N",
        type=int,
        help="seed torch's random generator (greedy decoding itself uses no randomness)",
    )
    return p


def run(args: argparse.Namespace) -> None:
    if args.seed is not None:
        torch.manual_seed(args.seed)
    started = time.perf_counter()
    _status(f"loading {args.model} ...")
    tokenizer = Tokenizer.from_pretrained(args.model, revision=args.revision)
    model = GPT2.from_pretrained(args.model, device=args.device, dtype=DTYPES[args.dtype], revision=args.revision)
    _status(
        f"loaded {model.num_params() / 1e6:.1f}M parameters in {time.perf_counter() - started:.1f}s; generating ..."
    )

    prompt = tokenizer.encode(args.prompt)
    if not prompt and tokenizer.eos_token_id is not None:
        prompt = [tokenizer.eos_token_id]  # an empty prompt starts from the eos token, as in transformers
    if args.max_length is None and args.max_new_tokens is None:
        args.max_new_tokens = DEFAULT_NEW_TOKENS
    output = model.generate(
        torch.tensor([prompt], dtype=torch.long),
        max_new_tokens=args.max_new_tokens,
        max_length=args.max_length,
        num_return_sequences=args.num_return_sequences,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=not args.no_cache,
    )
    for i, row in enumerate(output.tolist()):
        new = row[len(prompt) :]
        if tokenizer.eos_token_id in new:  # a finished row: cut the eos and the padding after it
            new = new[: new.index(tokenizer.eos_token_id)]
        text = tokenizer.decode(prompt + new) if args.prompt else tokenizer.decode(new)
        print(f"{i}: {text}" if len(output) > 1 else text)


def _status(message: str) -> None:
    """Progress for a person watching; kept off stderr when it is a pipe, so errors stay one line."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    hf_logging.set_verbosity_error()  # the hub's retry warnings would bury the one line that explains a failure
    try:
        run(args)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"minigpt2: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
