"""What tests (minigpt2's and a user's CI) build checkpoints with, offline: random GPT-2 checkpoints in the
official hub layout and others (checkpoints.py; transformers, the reference, is needed to build them)."""

from .checkpoints import SAMPLE_TEXTS, SHAPES, write_checkpoint

__all__ = ["SAMPLE_TEXTS", "SHAPES", "write_checkpoint"]
