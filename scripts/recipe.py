"""nanoGPT's CPU recipe (shakespeare_char, from its README), trained by `minigpt2 train`: the final val loss
and the wall time, and, with --nanogpt, nanoGPT's own train.py run the same way in turn.

    python scripts/recipe.py ../shared/data/tinyshakespeare/input.txt
    python scripts/recipe.py input.txt --nanogpt ~/nanoGPT --rounds 2   # nanoGPT's train.py beside it

nanoGPT's README reports a val loss of about 1.88 for this recipe. For --nanogpt, DIR is a clone of
nanoGPT whose data/shakespeare_char/prepare.py has been run (it writes train.bin, val.bin and meta.pkl).
Each run is a fresh process; with several rounds they alternate, and the medians are reported.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, beside this script

from minigpt2.machine import cpu_description  # noqa: E402

STEPS = 2000
# The README's command line, in each trainer's spelling. nanoGPT's config/train_shakespeare_char.py adds
# lr 1e-3 (min 1e-4), 100 warmup steps, beta2 0.99 and an eval every 250 steps; minigpt2 gets them as flags.
MINIGPT2 = (
    "--char --n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 --dropout 0 "
    f"--steps {STEPS} --lr 1e-3 --min-lr 1e-4 --warmup 100 --beta2 0.99 --eval-every 250 --eval-batches 20 "
    "--log-every 250 --no-tensorboard"
).split()
NANOGPT = (
    "config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1 "
    f"--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters={STEPS} "
    f"--lr_decay_iters={STEPS} --dropout=0.0"
).split()


def run_minigpt2(data: Path, scratch: Path) -> tuple[float, float]:
    out = scratch / f"minigpt2-{time.monotonic_ns()}"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "minigpt2", "train", str(data), *MINIGPT2, "--out", str(out)], check=True)
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in rows if "val_loss" in r][-1], seconds


def run_nanogpt(folder: Path, scratch: Path) -> tuple[float, float]:
    out = scratch / f"nanogpt-{time.monotonic_ns()}"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "train.py", *NANOGPT, f"--out_dir={out}"], cwd=folder, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"recipe.py: error: nanoGPT's train.py failed: {done.stderr.strip().splitlines()[-1]}")
    val = re.findall(rf"step {STEPS}: train loss [\d.]+, val loss ([\d.]+)", done.stdout)
    return float(val[-1]), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("data", type=Path, help="tinyshakespeare's input.txt")
    parser.add_argument("--nanogpt", type=Path, metavar="DIR", help="a prepared nanoGPT clone, to run beside")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"{args.data} is not a file; give tinyshakespeare's input.txt")
    if args.nanogpt and not (args.nanogpt / "data" / "shakespeare_char" / "meta.pkl").is_file():
        parser.error(f"{args.nanogpt}: run data/shakespeare_char/prepare.py there first")
    runs = {"minigpt2": lambda s: run_minigpt2(args.data, s)}
    if args.nanogpt:
        runs["nanoGPT"] = lambda s: run_nanogpt(args.nanogpt, s)
    figures = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for name, run in runs.items():
                figures[name].append(run(Path(scratch)))
                print(f"{name}: val loss {figures[name][-1][0]:.4f}, {figures[name][-1][1]:.1f} s", file=sys.stderr)
    print(f"cpu: {cpu_description()}; nanoGPT's README: val loss about 1.88")
    for name, results in figures.items():
        vals, seconds = zip(*results)
        print(
            f"{name}: val loss {statistics.median(vals):.4f} after {STEPS} steps, "
            f"{statistics.median(seconds):.1f} s wall (median of {len(results)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
