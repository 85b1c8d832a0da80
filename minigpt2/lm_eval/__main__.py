"""python -m minigpt2.lm_eval [lm-eval's run arguments]: lm-eval's own command line, with --model minigpt2
unless another --model is given. --model_args takes MiniGPT2LM's arguments: pretrained=NAME_OR_PATH,
revision=, dtype=, quantize=int8, fast=true, max_length=, max_gen_toks=."""

import sys

from . import MiniGPT2LM  # noqa: F401 - registered under "minigpt2" before lm-eval looks the name up

SUBCOMMANDS = ("run", "ls", "validate")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    subcommand, args = (args[:1], args[1:]) if args[:1] and args[0] in SUBCOMMANDS else (["run"], args)
    named = any(a in ("--model", "-M") or a.startswith("--model=") for a in args)
    if subcommand == ["run"] and not named:
        args = ["--model", "minigpt2", *args]
    sys.argv = [sys.argv[0], *subcommand, *args]
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
