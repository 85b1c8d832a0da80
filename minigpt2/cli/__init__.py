"""The `minigpt2` command: the loop script (generate.py), and the subcommands of SUBCOMMANDS, one module
each. Every failure the user can fix is one line on stderr and exit status 1 (a command may name another:
ERROR_STATUS); `python -m minigpt2` is the same command."""

from __future__ import annotations

import os
import sys
import warnings

from huggingface_hub.utils import logging as hf_logging

from ..checkpoint import CheckpointError
from . import choice, explore, export, generate, parity, perplexity, train

SUBCOMMANDS = {
    "explore": explore,
    "export": export,
    "perplexity": perplexity,
    "multiple-choice": choice,
    "parity": parity,
    "train": train,
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `minigpt2 parity MODEL`, `minigpt2 explore PROMPT`, ...; to continue the word itself: `minigpt2 -- parity`
    if argv[:1] and argv[0] in SUBCOMMANDS:
        command, prog, argv = SUBCOMMANDS[argv[0]], f"minigpt2 {argv[0]}", argv[1:]
    else:
        command, prog = generate, "minigpt2"
    args = command.build_parser().parse_args(argv)
    hf_logging.set_verbosity_error()  # the hub's retry warnings would bury the one line that explains a failure
    try:
        with warnings.catch_warnings():  # a warning is one line too, and the setting ends with the command
            warnings.showwarning = lambda message, *_, **__: print(f"{prog}: warning: {message}", file=sys.stderr)
            status = command.run(args)
    except BrokenPipeError:  # the reader stopped early (| head): stop quietly, as a command killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit flush does not fail
        return 141
    except (CheckpointError, ValueError, OSError, ImportError) as e:
        clear = "\r\x1b[K" if sys.stderr.isatty() else ""  # a progress line the error cut short
        print(f"{clear}{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return getattr(command, "ERROR_STATUS", 1)
    except KeyboardInterrupt:
        return 130
    return status or 0
