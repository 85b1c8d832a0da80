"""What a run shows while it learns: a progress line on stderr (rewritten in place on a terminal), a JSONL
row for every step (the log a resume trims back to its step), TensorBoard's scalars when tensorboard is
installed, and the loss curves drawn from the log (`--plot`, the plots extra)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from ..writing import check_writable


class Progress:
    """Open for the steps of one fit(): `with Progress(...) as progress: progress.record(row)`."""

    def __init__(self, log_path: Path, steps: int, log_every: int, first_step: int, tensorboard: Path | None = None):
        self.log_path, self.steps, self.log_every, self.first = log_path, steps, log_every, first_step
        self.tensorboard = tensorboard
        self.log = self.board = None

    def __enter__(self) -> Progress:
        check_writable(self.log_path)
        keep_log_until(self.log_path, self.first)
        self.log = open(self.log_path, "a", encoding="utf-8")
        if self.tensorboard is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional: the JSONL log holds the same numbers
                pass
            else:
                self.board = SummaryWriter(str(self.tensorboard), purge_step=self.first + 1)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.log.close()
        if self.board is not None:
            self.board.close()

    def record(self, row: dict) -> None:
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()  # a killed run's log holds every step it finished
        if self.board is not None:
            for name, value in row.items():
                if name != "step" and isinstance(value, (int, float)):
                    self.board.add_scalar(name, value, row["step"])
        self._line(row)

    def _line(self, row: dict) -> None:
        tty = sys.stderr.isatty()
        due = "val_loss" in row or (self.log_every and row["step"] % self.log_every == 0)
        if not (tty or due):
            return
        eta = (time.perf_counter() - self.started) / (row["step"] - self.first) * (self.steps - row["step"])
        line = (
            f"step {row['step']}/{self.steps} loss {row['loss']:.4f} lr {row['lr']:.2e} "
            f"{row['tokens_per_s']:,.0f} tok/s ETA {eta // 60:.0f}m{eta % 60:02.0f}s"
        )
        if "val_loss" in row:
            line += f" val {row['val_loss']:.4f}"
        for name, shown in (("choice_accuracy", "choices"), ("induction_max", "induction")):  # track.py's probes
            if name in row:
                line += f" {shown} {row[name]:.3f}"
        # On a terminal the line is rewritten in place, and kept (a newline) at each val loss.
        end = "\n" if due or not tty else ""
        print(("\r" if tty else "") + line + ("\033[K" if tty else ""), end=end, file=sys.stderr)
        if "sample" in row:
            print(row["sample"], file=sys.stderr)
        if "note" in row:  # a line of its own: what the run decided at this step (--compile's choice)
            print(row["note"], file=sys.stderr)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def keep_log_until(path: Path, step: int) -> None:
    """A resumed run's log continues after its checkpoint's step: rows a killed run wrote after it go."""
    if not path.is_file():
        return
    if step == 0:
        path.unlink()
        return
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line).get("step", 0) <= step]
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


def plot_log(log_path: Path, png_path: Path) -> Path:
    """The train and val loss curves of a run's log, as a PNG (matplotlib: the plots extra); a tracked run's
    head scores (--track) too, into track.png beside it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError('--plot draws with matplotlib: pip install -e ".[plots]"') from e
    rows = read_log(log_path)
    tracked = [r for r in rows if "track" in r]
    if tracked:
        _plot_track(plt, tracked, Path(png_path).with_name("track.png"))
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train", linewidth=0.8)
    val = [r for r in rows if "val_loss" in r]
    axes.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val")
    axes.set(xlabel="step", ylabel="loss (nats a token)", title=Path(log_path).parent.name)
    axes.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return Path(png_path)


def _plot_track(plt, tracked: list[dict], png_path: Path) -> None:
    """The best induction and previous-token head over the steps, and every head's score at the last step."""
    from ..interp.plots import plot_head_scores

    figure, (curves, induction, previous) = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in tracked]
    curves.plot(steps, [r["induction_max"] for r in tracked], "o-", label="induction")
    curves.plot(steps, [r["previous_token_max"] for r in tracked], "o-", label="previous token")
    curves.set(xlabel="step", ylabel="score of the best head", ylim=(0, 1), title=png_path.parent.name)
    curves.legend()
    last = tracked[-1]
    for kind, axes in (("induction", induction), ("previous_token", previous)):
        title = f"{kind.replace('_', '-')} scores at step {last['step']}"
        plot_head_scores(torch.tensor(last["track"][kind]), title=title, ax=axes)
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
