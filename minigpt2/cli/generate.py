"""The loop script: continue prompts with GPT-2 (scripts/generate.py and the `minigpt2` command)."""

from __future__ import annotations

import argparse
import itertools
import sys

from ..generation import run_to_end
from ..generation.assisted import pass_cost
from ..generation.config import DEFAULTS
from ..loading.kernel_choice import describe_kernels
from .options import (
    DEFAULT_PROMPT,
    Parser,
    add_generation_options,
    add_load_options,
    generation_config,
    load_from_args,
    positive_int,
)

EXAMPLES = """examples:
  minigpt2 "Once upon a time"
  minigpt2 "The meaning of life is" --model gpt2 --max-new-tokens 60
  minigpt2 "Hello" "Bonjour" --model ./my-checkpoint --max-length 30
  minigpt2 "Once upon a time" --do-sample --temperature 0.8 --top-p 0.9 --seed 1 --num-return-sequences 3
  minigpt2 "Once upon a time" --explain 5 --max-new-tokens 5
  minigpt2 "Once upon a time" --num-beams 4 --no-repeat-ngram-size 2 --num-return-sequences 2
  minigpt2 "Q: What is GPT-2? A:" --repetition-penalty 1.3 --stop "Q:" --stop "\n\n"
  minigpt2 parity gpt2-medium          (compare with transformers: minigpt2 parity --help)
  minigpt2 explore "Once upon a time"  (a page to walk through the steps: minigpt2 explore --help)
  minigpt2 export gpt2 --gguf gpt2.gguf (for llama.cpp: minigpt2 export --help)
  minigpt2 perplexity wiki.test.raw --model gpt2 --stride 512   (minigpt2 perplexity --help)
  minigpt2 multiple-choice hellaswag_val.jsonl --model gpt2     (minigpt2 multiple-choice --help)
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="minigpt2",
        description="Continue a prompt with GPT-2: greedy decoding with a KV cache, printed as text.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "prompts",
        metavar="PROMPT",
        nargs="*",
        help=f'text to continue; several prompts run as one padded batch (default: "{DEFAULT_PROMPT}")',
    )
    add_load_options(p)
    add_generation_options(p)
    p.add_argument(
        "--num-return-sequences",
        metavar="K",
        type=positive_int,
        help=f"rows to generate (default: {DEFAULTS['num_return_sequences']})",
    )
    decode = p.add_mutually_exclusive_group()
    decode.add_argument(
        "--no-cache",
        dest="use_cache",
        action="store_false",
        default=None,
        help="feed the whole sequence every step instead of using the KV cache",
    )
    decode.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="compile the decode step with torch.compile (CUDA graphs on a GPU); compiling takes a minute or more",
    )
    beams = p.add_argument_group("beam search (default: one row per prompt, no beams)")
    beams.add_argument(
        "--num-beams",
        metavar="N",
        type=positive_int,
        help=f"keep the N best sequences (default: {DEFAULTS['num_beams']})",
    )
    beams.add_argument(
        "--length-penalty",
        metavar="F",
        type=float,
        help=f"finished beams score log-probability / length**F; above 0 favours longer ones (default: {DEFAULTS['length_penalty']:g})",
    )
    beams.add_argument(
        "--early-stopping",
        type=lambda text: {"true": True, "false": False}.get(text, text),
        choices=[True, False, "never"],
        metavar="{true,false,never}",
        help="stop when N beams have finished (true), when more look unlikely to help (false), or never "
        f"(default: {str(DEFAULTS['early_stopping']).lower()})",
    )
    assisted = p.add_argument_group("assisted decoding (batch 1; the same greedy tokens, fewer passes of the model)")
    assisted.add_argument(
        "--assistant",
        metavar="NAME_OR_PATH",
        help="a smaller GPT-2 with the same tokenizer that drafts tokens for the model to check (e.g. distilgpt2)",
    )
    assisted.add_argument(
        "--num-assistant-tokens",
        metavar="K",
        type=positive_int,
        help=f"tokens drafted per round (default: {DEFAULTS['num_assistant_tokens']})",
    )
    assisted.add_argument(
        "--prompt-lookup",
        dest="prompt_lookup_num_tokens",
        metavar="N",
        type=positive_int,
        help="draft N tokens from the text itself, after an earlier copy of its last tokens (no second model)",
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
        type=positive_int,
        help="show every step: the K most likely next tokens (after the processors) and the one picked; "
        "with beams, each beam's token, log-probability and score",
    )
    return p


def run(args: argparse.Namespace) -> None:
    model, tokenizer = load_from_args(args)
    assistant = load_from_args(args, args.assistant)[0] if args.assistant else None
    config = generation_config(args, model)
    prompts = args.prompts or [DEFAULT_PROMPT]
    input_ids, attention_mask = tokenizer.encode_batch(prompts)
    rounds = Rounds()
    steps = model.stream(
        input_ids, config=config, attention_mask=attention_mask, tokenizer=tokenizer, assistant_model=assistant
    )
    per_prompt = config.num_return_sequences
    rows, beams = len(prompts) * per_prompt, config.beams
    explain = (_beam_explainer if beams else _explainer)(tokenizer, args.explain) if args.explain else None
    if args.explain:
        print(f"defaults from {model.generation_defaults_source}: {_options(model.generation_defaults)}")
        for line in describe_kernels(model):  # --fast: the kernel this machine runs fastest per shape and rows
            print(f"kernels, {line}")
    if assistant is not None or config.prompt_lookup_num_tokens:
        steps = rounds.count(steps)
    stream = (
        sys.stdout.isatty() and rows == 1 and not args.explain and not beams if args.stream is None else args.stream
    )
    if stream and (rows > 1 or beams):
        raise ValueError(
            "--stream prints one row as it grows; give one prompt, --num-return-sequences 1 and no --num-beams"
        )

    def continuation(new_tokens, row):
        """The text of a row's new tokens, continuing its prompt's (pieces, as they arrive)."""
        prompt = row // per_prompt
        prompt_ids = input_ids[prompt][attention_mask[prompt] == 1].tolist()
        return tokenizer.decode_stream(_until_eos(new_tokens, config.eos_ids), after=prompt_ids)

    made = []  # the first row's new tokens
    if stream:

        def first_row_tokens():
            for step in steps:
                if explain:
                    explain(step)
                made.append(step.tokens[0].item())
                yield made[-1]

        print(prompts[0], end="", flush=True)
        for piece in continuation(first_row_tokens(), 0):
            print(piece, end="", flush=True)
        print()
    else:
        sequences, _ = run_to_end(steps, explain)
        made = sequences[0, input_ids.size(1) :].tolist()
        for i in range(rows):
            new_tokens = sequences[i, input_ids.size(1) :].tolist()
            text = prompts[i // per_prompt] + "".join(continuation(new_tokens, i))
            print(f"{i}: {text}" if rows > 1 else text)
    if rounds.passes:
        print(rounds.summary(assistant, model), file=sys.stderr)
    if rounds.passes and args.explain and not config.do_sample:
        plain = model.generate(
            input_ids,
            config=config.replace(prompt_lookup_num_tokens=None),
            attention_mask=attention_mask,
            tokenizer=tokenizer,
        )
        print(f"minigpt2: {_agreement(made, plain[0, input_ids.size(1) :].tolist())}", file=sys.stderr)


class Rounds:
    """Assisted decoding's rounds, counted as the steps go by, for the summary it prints."""

    def __init__(self):
        self.passes = self.drafted = self.accepted = self.tokens = 0

    def count(self, steps):
        """stream()'s steps, counted on the way, and its result at the end."""
        while True:
            try:
                step = next(steps)
            except StopIteration as end:
                return end.value
            self.tokens += 1
            if step.drafted is not None:
                self.passes += 1
                self.drafted, self.accepted = self.drafted + step.drafted, self.accepted + step.accepted
            yield step

    def summary(self, assistant, model) -> str:
        per_pass = self.tokens / self.passes
        rate = f"{self.accepted / self.drafted:.0%} of {self.drafted} drafts accepted" if self.drafted else "no drafts"
        line = f"minigpt2: assisted decoding: {self.tokens} tokens in {self.passes} passes of the model ({per_pass:.2f} a pass), {rate}"
        # What a round costs, measured on the model at hand: its pass over the drafts and its own token, and
        # the draft model's steps, in plain decode steps of the model.
        drafts = self.drafted / self.passes
        checked_tokens = round(drafts) + 1  # a pass checks the drafts and makes the model's own token
        step, checked = pass_cost(model, 1), pass_cost(model, checked_tokens)
        cost = (checked + (drafts * pass_cost(assistant, 1) if assistant else 0)) / step
        line += f"; a round costs {cost:.2f} plain steps here (measured: a pass of {checked_tokens} tokens {checked / step:.2f})"
        if per_pass < cost:
            line += ", so this was slower than plain decoding"
        return line


def _agreement(assisted: list[int], plain: list[int]) -> str:
    """How long assisted greedy's tokens stay plain greedy's: a pass over several tokens can round otherwise
    than one-token steps (bf16, int8), and near-ties then pick another token."""
    same = next((i for i, (a, b) in enumerate(zip(assisted, plain)) if a != b), min(len(assisted), len(plain)))
    if same == len(assisted) == len(plain):
        return f"plain greedy decoding (run to check, for --explain) makes the same {same} tokens"
    return (
        f"plain greedy decoding (run to check, for --explain) makes the same first {same} of {len(plain)} tokens, "
        "then another: a pass over several tokens rounds otherwise than one-token steps in this dtype"
    )


def _options(values: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in sorted(values.items())) or "none"


def _until_eos(tokens, eos_ids: tuple[int, ...]):
    for token in tokens:
        if token in eos_ids:
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
        if step.drafted is not None:
            print(f"step {n}: drafted {step.drafted}, the model kept {step.accepted} and added its own token")
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
