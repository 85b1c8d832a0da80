"""The `minigpt2` command: the loop script (generate.py), `minigpt2 explore` (explore.py), `minigpt2 export`
(export.py), `minigpt2 perplexity` (perplexity.py), `minigpt2 multiple-choice` (choice.py) and `minigpt2 parity` (minigpt2/parity/). Every failure the user can fix is one line on stderr."""

from __future__ import annotations

import os
import sys

from huggingface_hub.utils import logging as hf_logging

from .. import parity
from ..checkpoint import CheckpointError
from . import choice, explore, export, generate, perplexity

SUBCOMMANDS = {
    "explore": explore,
    "export": export,
    "perplexity": perplexity,
    "multiple-choice": choice,
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `minigpt2 parity MODEL`, `minigpt2 explore PROMPT`, ...; to continue the word itself: `minigpt2 -- parity`
    if argv[:1] == ["parity"]:  # its own exit codes: 0 pass, 1 a figure past its threshold, 2 could not run
        return parity.main(argv[1:])
    if argv[:1] and argv[0] in SUBCOMMANDS:
        command, prog, argv = SUBCOMMANDS[argv[0]], f"minigpt2 {argv[0]}", argv[1:]
    else:
        command, prog = generate, "minigpt2"
    args = command.build_parser().parse_args(argv)
    hf_logging.set_verbosity_error()  # the hub's retry warnings would bury the one line that explains a failure
    try:
        command.run(args)
    except BrokenPipeError:  # the reader stopped early (| head): stop quietly, as a command killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit flush does not fail
        return 141
    except (CheckpointError, ValueError, OSError, ImportError) as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
