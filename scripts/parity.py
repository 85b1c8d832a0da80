#!/usr/bin/env python
"""The parity report against transformers: python scripts/parity.py MODEL (the same program as
`minigpt2 parity MODEL`; minigpt2/parity/ computes it). --help lists the options."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing the package

from minigpt2.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["parity", *sys.argv[1:]]))
