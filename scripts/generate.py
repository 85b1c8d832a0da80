#!/usr/bin/env python
"""The loop script: python scripts/generate.py "Once upon a time" [--model gpt2-medium] [--max-new-tokens 40].

The same program as the installed `minigpt2` command; --help lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing the package

from minigpt2.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
