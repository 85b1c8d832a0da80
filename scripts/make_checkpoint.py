#!/usr/bin/env python
"""Write a random GPT-2 checkpoint in the official hub layout (or another), built with transformers:
python scripts/make_checkpoint.py DIR [--shape tiny] [--layout official] [--tokenizer].
minigpt2/testing/checkpoints.py holds it; --help lists the layouts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing the package

from minigpt2.testing.checkpoints import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
