"""The training wing: data (data/), AdamW and its schedule (optim.py), the loop (loop.py), checkpoints
that never lose work (checkpoints.py); the run's settings (config.py), its model (build.py), LoRA (lora.py), more
than one process (distributed.py), progress (progress.py) and probes of the heads (track.py); `minigpt2 train` is
cli/train.py. See docs/training.md.

    from minigpt2.training import TrainConfig, train, resume
    trainer = train(TrainConfig("notes.txt", model="gpt2", steps=200, out="out"))
    trainer.history[-1]      # {"step": 200, "loss": ..., "lr": ..., "grad_norm": ..., "val_loss": ...}
    resume("out", steps=400)  # on from out/'s newest checkpoint
"""

from .config import TrainConfig
from .data import CharVocab
from .loop import Trainer, resume, train

__all__ = ["CharVocab", "TrainConfig", "Trainer", "resume", "train"]
