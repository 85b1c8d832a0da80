"""The loop script: continue prompts with GPT-2 (scripts/generate.py and the `minigpt2` command)."""

from __future__ import annotations

import argparse
import itertools
import os
import runpy
import sys
import time
from pathlib import Path

import torch
from huggingface_hub.utils import logging as hf_logging

from .checkpoint import CheckpointError
from .generation import run_to_end
from .linear import onednn_matmuls
from .model import GPT2
from .tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_NEW_TOKENS = 40
DEFAULT_PROMPT = "Once upon a time"

EXAMPLES = """examples:
  minigpt2 "Once upon a time"
  minigpt2 "The meaning of life is" --model gpt2 --max-new-tokens 60
  minigpt2 "Hello" "Bonjour" --model ./my-checkpoint --max-length 30
  minigpt2 "Once upon a time" --do-sample --temperature 0.8 --top-p 0.9 --seed 1 --num-return-sequences 3
  minigpt2 "Once upon a time" --explain 5 --max-new-tokens 5
  minigpt2 "Once upon a time" --num-beams 4 --no-repeat-ngram-size 2 --num-return-sequences 2
  minigpt2 "Q: What is GPT-2? A:" --repetition-penalty 1.3 --stop "Q:" --stop "\n\n"
  minigpt2 parity gpt2-medium          (compare with transformers: python scripts/parity.py --help)
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit code 2, as for every other bad input
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(low, text: str, kind=int, what="a whole number"):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"expected {what} of at least {low}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _at_least(1, text)


def _non_negative_int(text: str) -> int:
    return _at_least(0, text)


def _non_negative_float(text: str) -> float:
    return _at_least(0, text, float, "a number")  # temperature > 0 and top_p <= 1 are generate()'s checks


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="minigpt2",
        description="Continue a prompt with GPT-2: greedy decoding with a KV cache, printed as text.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "prompts",
        metavar="PROMPT",
        nargs="*",
        help='text to continue; several prompts run as one padded batch (default: "Once upon a time")',
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
    decode = p.add_mutually_exclusive_group()
    decode.add_argument(
        "--no-cache", action="store_true", help="feed the whole sequence every step instead of using the KV cache"
    )
    decode.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step with torch.compile (CUDA graphs on a GPU); compiling takes a minute or more",
    )
    p.add_argument(
        "--quantize",
        choices=["int8"],
        help="store the projections and the LM head as int8 (about 2.8x fp32's decode speed on an AVX-512 CPU; "
        "approximate)",
    )
    p.add_argument(
        "--onednn",
        action="store_true",
        help="on the CPU in fp32, decode with oneDNN's matrix products: faster, rounded unlike transformers'",
    )
    sampling = p.add_argument_group("sampling (default: greedy)")
    sampling.add_argument("--do-sample", action="store_true", help="draw each token instead of taking the argmax")
    sampling.add_argument(
        "--temperature",
        metavar="T",
        type=_non_negative_float,
        help="divide the scores by T before drawing (default: 1)",
    )
    sampling.add_argument(
        "--top-k", metavar="K", type=_non_negative_int, help="draw from the K best (default: 50; 0: all)"
    )
    sampling.add_argument(
        "--top-p",
        metavar="P",
        type=_non_negative_float,
        help="draw from the smallest set with probability P (default: 1)",
    )
    sampling.add_argument("--seed", metavar="N", type=int, help="seed the draws, for the same text every run")
    beams = p.add_argument_group("beam search (default: one row per prompt, no beams)")
    beams.add_argument(
        "--num-beams", metavar="N", type=_positive_int, default=1, help="keep the N best sequences (default: 1)"
    )
    beams.add_argument(
        "--length-penalty",
        metavar="F",
        type=float,
        default=1.0,
        help="finished beams score log-probability / length**F; above 0 favours longer ones (default: 1)",
    )
    beams.add_argument(
        "--early-stopping",
        choices=["true", "false", "never"],
        default="false",
        help="stop when N beams have finished (true), when more look unlikely to help (false), or never",
    )
    controls = p.add_argument_group("repetition and stopping")
    controls.add_argument(
        "--repetition-penalty",
        metavar="F",
        type=_non_negative_float,
        help="divide the scores of tokens already in the text by F (above 1 discourages them)",
    )
    controls.add_argument(
        "--no-repeat-ngram-size", metavar="N", type=_positive_int, help="never repeat a run of N tokens"
    )
    controls.add_argument("--min-new-tokens", metavar="N", type=_non_negative_int, help="hold eos back for N tokens")
    controls.add_argument(
        "--stop",
        metavar="TEXT",
        action="append",
        help="stop a row once TEXT appears in what it generates (repeat for several)",
    )
    p.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        help="print text as it is generated (default: on a terminal, for one row without beam search)",
    )
    p.add_argument(
        "--explain",
        metavar="K",
        nargs="?",
        const=5,
        type=_positive_int,
        help="show every step: the K most likely next tokens (after the processors) and the one picked; "
        "with beams, each beam's token, log-probability and score",
    )
    return p


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    _status(f"loading {args.model} ...")
    tokenizer = Tokenizer.from_pretrained(args.model, revision=args.revision)
    model = GPT2.from_pretrained(
        args.model, device=args.device, dtype=DTYPES[args.dtype], revision=args.revision, quantize=args.quantize
    )
    _status(
        f"loaded {model.num_params() / 1e6:.1f}M parameters in {time.perf_counter() - started:.1f}s; generating ..."
    )

    prompts = args.prompts or [DEFAULT_PROMPT]
    input_ids, attention_mask = tokenizer.encode_batch(prompts)
    if args.max_length is None and args.max_new_tokens is None:
        args.max_new_tokens = DEFAULT_NEW_TOKENS
    steps = model.stream(
        input_ids,
        max_new_tokens=args.max_new_tokens,
        max_length=args.max_length,
        attention_mask=attention_mask,
        num_return_sequences=args.num_return_sequences,
        eos_token_id=tokenizer.eos_token_id,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        early_stopping={"true": True, "false": False, "never": "never"}[args.early_stopping],
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        min_new_tokens=args.min_new_tokens,
        stop_strings=args.stop,
        tokenizer=tokenizer,
        use_cache=not args.no_cache,
        compile=args.compile,
    )
    rows, beams = len(prompts) * args.num_return_sequences, args.num_beams > 1
    explain = (_beam_explainer if beams else _explainer)(tokenizer, args.explain) if args.explain else None
    stream = (
        sys.stdout.isatty() and rows == 1 and not args.explain and not beams if args.stream is None else args.stream
    )
    if stream and (rows > 1 or beams):
        raise ValueError(
            "--stream prints one row as it grows; give one prompt, --num-return-sequences 1 and no --num-beams"
        )

    def continuation(new_tokens, row):
        """The text of a row's new tokens, continuing its prompt's (pieces, as they arrive)."""
        prompt = row // args.num_return_sequences
        prompt_ids = input_ids[prompt][attention_mask[prompt] == 1].tolist()
        return tokenizer.decode_stream(_until_eos(new_tokens, tokenizer.eos_token_id), after=prompt_ids)

    if stream:

        def first_row_tokens():
            for step in steps:
                if explain:
                    explain(step)
                yield step.tokens[0].item()

        print(prompts[0], end="", flush=True)
        for piece in continuation(first_row_tokens(), 0):
            print(piece, end="", flush=True)
        print()
        return
    sequences, _ = run_to_end(steps, explain)
    for i in range(rows):
        new_tokens = sequences[i, input_ids.size(1) :].tolist()
        text = prompts[i // args.num_return_sequences] + "".join(continuation(new_tokens, i))
        print(f"{i}: {text}" if rows > 1 else text)


def _until_eos(tokens, eos_token_id: int | None):
    for token in tokens:
        if token == eos_token_id:
            return
        yield token


def _explainer(tokenizer, k: int):
    """A line per step and row: the k most likely next tokens under the scores the token was picked
    from (after the processors; when sampling, after temperature, top-k and top-p too), and the pick."""
    finished_before, numbers = None, itertools.count(1)

    def explain(step):
        nonlocal finished_before
        n, rows = next(numbers), step.tokens.size(0)
        probs = step.scores.float().softmax(dim=-1)  # [R, V]
        best = probs.topk(min(k, probs.size(-1)))
        for row in range(rows):
            if finished_before is not None and finished_before[row]:  # only padding from here on
                continue
            token = step.tokens[row].item()
            candidates = _candidates(tokenizer, best.values[row], best.indices[row])
            where = f"step {n}" + (f" row {row}" if rows > 1 else "")
            print(f"{where}: picked {tokenizer.decode([token])!r} p={probs[row, token]:.3f} | top {k}: {candidates}")
        finished_before = step.finished.tolist()

    return explain


def _beam_explainer(tokenizer, k: int):
    """A line per step and running beam: the beam it continues, the token added with its log-probability
    (after the processors), the beam's summed log-probability, and the k best next tokens of the beam
    it continues."""

    numbers = itertools.count(1)

    def explain(step):
        n = next(numbers)
        best = step.scores.topk(min(k, step.scores.size(-1)))  # [R, k]: rows of the last step
        beams = step.parents.tolist(), step.tokens.tolist(), step.logprobs.tolist(), step.beam_scores.tolist()
        rows = zip(*beams, strict=True)
        for row, (parent, token, logprob, score) in enumerate(rows):
            candidates = _candidates(tokenizer, best.values[parent], best.indices[parent])
            print(
                f"step {n} beam {row} (from {parent}): picked {tokenizer.decode([token])!r} "
                f"logp={logprob:.3f} sum={score:.3f} | top {k}: {candidates}"
            )

    return explain


def _candidates(tokenizer, values, indices) -> str:
    return "  ".join(
        f"{tokenizer.decode([t])!r} {v:.3f}" for v, t in zip(values.tolist(), indices.tolist(), strict=True)
    )


def _status(message: str) -> None:
    """Progress for a person watching; kept off stderr when it is a pipe, so errors stay one line."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["parity"]:  # `minigpt2 parity MODEL`; to continue the word "parity", write `minigpt2 -- parity`
        return _parity(argv[1:])
    args = build_parser().parse_args(argv)
    hf_logging.set_verbosity_error()  # the hub's retry warnings would bury the one line that explains a failure
    try:
        with onednn_matmuls(args.onednn):
            run(args)
    except BrokenPipeError:  # the reader stopped early (| head): stop quietly, as a command killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit flush does not fail
        return 141
    except (CheckpointError, ValueError, OSError) as e:
        print(f"minigpt2: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _parity(argv: list[str]) -> int:
    """The parity report lives in scripts/parity.py: it needs transformers, which minigpt2 itself never imports."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "parity.py"
    if not script.is_file():
        print(
            "minigpt2: error: `minigpt2 parity` runs scripts/parity.py from a clone of the repository", file=sys.stderr
        )
        return 2
    return runpy.run_path(str(script), run_name="minigpt2_parity")["main"](argv)


if __name__ == "__main__":
    sys.exit(main())
