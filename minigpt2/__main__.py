"""python -m minigpt2: the minigpt2 command."""

import sys

from .cli import main

sys.exit(main())
