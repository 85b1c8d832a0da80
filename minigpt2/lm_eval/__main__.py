"""python -m minigpt2.lm_eval [lm-eval's run arguments]: lm-eval's own command line, with --model minigpt2
unless another --model is given. --model_args takes MiniGPT2LM's arguments: pretrained=NAME_OR_PATH,
revision=, base=, dtype=, quantize=int8, fast=true, max_length=, max_gen_toks=.

A failure the user can fix (a bad model_args key, a checkpoint that does not load, a task whose data
cannot be fetched) is one line on stderr and exit status 1, as for the `minigpt2` command."""

import sys

from . import MiniGPT2LM  # noqa: F401 - registered under "minigpt2" before lm-eval looks the name up

SUBCOMMANDS = ("run", "ls", "validate")
OFFLINE = "to run offline, give a local YAML task over local files: --include_path FOLDER --tasks NAME (docs/score.md)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    subcommand, args = (args[:1], args[1:]) if args[:1] and args[0] in SUBCOMMANDS else (["run"], args)
    named = any(a in ("--model", "-M") or a.startswith("--model=") for a in args)
    if subcommand == ["run"] and not named:
        args = ["--model", "minigpt2", *args]
    sys.argv = [sys.argv[0], *subcommand, *args]
    from lm_eval.__main__ import cli_evaluate

    try:
        cli_evaluate()
    except (ValueError, OSError, ImportError) as e:  # CheckpointError is a ValueError; no network, an OSError
        message = " ".join(str(e).split())
        task = _task_fetching(e)
        if task is not None:
            message = f"the data of task {task} could not be fetched ({message}); {OFFLINE}"
        print(f"python -m minigpt2.lm_eval: error: {message}", file=sys.stderr)
        return 1
    return 0


def _task_fetching(error: BaseException) -> str | None:
    """The name of the lm-eval task whose download() raised `error`, if one did."""
    from lm_eval.api.task import Task

    frame = error.__traceback__
    while frame is not None:
        owner = frame.tb_frame.f_locals.get("self")
        if isinstance(owner, Task) and frame.tb_frame.f_code.co_name == "download":
            return getattr(owner.config, "task", None) or type(owner).__name__
        frame = frame.tb_next
    return None


if __name__ == "__main__":
    sys.exit(main())
