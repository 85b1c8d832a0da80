"""More than one process (minigpt2/training/distributed.py): `minigpt2 train` under torchrun, 2 gloo ranks on
the CPU, against the same command in one process. DDP's losses, val losses and checkpoint are the one
process's to float rounding; FSDP2's fully_shard resumes the DDP run's checkpoint and ends where one process
ends. Only rank 0 logs and saves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file
from test_train_runs import word_text

from minigpt2 import GPT2, GPT2Config
from minigpt2.training import checkpoints, distributed
from minigpt2.training.data import IGNORE

LOSS_TOLERANCE = 1e-6  # the loss of a step: 2 ranks' mean of B/2 rows each against B rows in one process
WEIGHT_TOLERANCE = 1e-5  # after 6 AdamW steps, which divide by gradients near 0 and so magnify their rounding
# A char model: batches of 4 rows of 16, 2 micro-batches a step (--tokens-per-step), a save and a val loss
# at steps 3 and 6.
RUN = ["--char", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
       "--tokens-per-step", "128", "--steps", "6", "--save-every", "3", "--eval-every", "3", "--eval-batches", "2",
       "--lr", "3e-3", "--log-every", "0", "--no-tensorboard"]  # fmt: skip


# `minigpt2 ARGV` for each ARGV in turn, in the same processes: torchrun's start-up (about 5 s) paid once.
COMMANDS = """
import json, sys
from minigpt2.cli import main
for argv in json.loads(sys.argv[1]):
    assert main(argv) == 0, argv
"""


def torchrun(folder, *commands: list) -> subprocess.CompletedProcess:
    """python -m torch.distributed.run --nproc_per_node 2 (the commands), one thread a rank, in folder."""
    (folder / "commands.py").write_text(COMMANDS)
    argvs = json.dumps([[str(a) for a in argv] for argv in commands])
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "commands.py", argvs],
        cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    print(f"torchrun, 2 ranks, {len(commands)} runs: {time.perf_counter() - started:.1f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def log(out) -> dict[int, dict]:
    return {row["step"]: row for row in map(json.loads, (out / "log.jsonl").read_text().splitlines())}


def largest_differences(one, many, steps) -> tuple[float, float]:
    """The largest difference of the train and the val losses over steps."""
    a, b = log(one), log(many)
    assert sorted(b) == list(steps)  # one row a step: only rank 0 logs
    loss = max(abs(a[s]["loss"] - b[s]["loss"]) for s in steps)
    val = max(abs(a[s]["val_loss"] - b[s]["val_loss"]) for s in steps if "val_loss" in a[s])
    return loss, val


def weight_difference(one, many) -> float:
    a, b = load_file(one / "model.safetensors"), load_file(many / "model.safetensors")
    assert sorted(a) == sorted(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The run in one process (this one); under torchrun, the same run in 2 DDP ranks, FSDP2 resuming its step
    3, and a run with dropout resumed from its step 3 under DDP: (folder, torchrun's result)."""
    folder = tmp_path_factory.mktemp("ddp")
    text = word_text(folder / "words.txt", lines=60)
    started = time.perf_counter()
    assert run_cli("train", str(text), *RUN, "--out", str(folder / "one")).returncode == 0
    print(f"one process: {time.perf_counter() - started:.1f} s")
    runs = (
        ["train", text, *RUN, "--out", "ddp"],
        ["train", "--resume", "ddp/step-000003", "--out", "fsdp", "--fsdp"],
        ["train", text, *RUN, "--dropout", "0.1", "--out", "dropout"],
        ["train", "--resume", "dropout/step-000003", "--out", "resumed"],
    )
    return folder, torchrun(folder, *runs)


def test_two_ddp_ranks_train_as_one_process(runs):
    folder, result = runs
    one, ddp = folder / "one", folder / "ddp"
    loss, val = largest_differences(one, ddp, range(1, 7))
    weights = weight_difference(one / "step-000006", ddp / "step-000006")
    print(f"DDP, 2 gloo ranks against 1 process: losses within {loss:.2e}, val losses {val:.2e}, weights {weights:.2e}")
    assert loss < LOSS_TOLERANCE and val < LOSS_TOLERANCE and weights < WEIGHT_TOLERANCE
    assert [p.name for p in checkpoints.checkpoints(ddp)] == ["step-000003", "step-000006"]
    # Rank 0's lines alone: the progress at each val loss (steps 3 and 6, or 6 resumed), the end of each run.
    assert len(re.findall(r"^step \d/6 loss", result.stderr, re.MULTILINE)) == 2 + 1 + 2 + 1
    assert len(result.stdout.splitlines()) == 4 and "checkpoints in ddp" in result.stdout
    assert len(torch.load(ddp / "step-000006" / checkpoints.STATE_FILE, weights_only=True)["rng"]) == 2  # each rank's


def test_fsdp_resumes_the_ddp_run_as_one_process(runs):
    folder, _ = runs
    one, fsdp = folder / "one", folder / "fsdp"
    loss, val = largest_differences(one, fsdp, range(4, 7))
    weights = weight_difference(one / "step-000006", fsdp / "step-000006")
    # The optimizer's state gathered from the shards, as one process numbers it: a checkpoint for any run.
    a, b = (torch.load(o / "step-000006" / checkpoints.STATE_FILE, weights_only=True)["optimizer"] for o in (one, fsdp))
    assert sorted(a["state"]) == sorted(b["state"])
    moments = max((a["state"][i][k] - b["state"][i][k]).abs().max().item() for i in a["state"] for k in a["state"][i])
    print(
        f"FSDP2 (fully_shard, 2 gloo ranks), steps 4-6 after the DDP run's step 3, against 1 process: losses within "
        f"{loss:.2e}, val losses {val:.2e}, weights {weights:.2e}, AdamW's moments {moments:.2e}"
    )
    assert loss < LOSS_TOLERANCE and val < LOSS_TOLERANCE and weights < WEIGHT_TOLERANCE
    assert moments < WEIGHT_TOLERANCE


def test_a_ddp_run_with_dropout_resumes_bit_for_bit(runs):
    # Each rank draws its own dropout masks (seed + rank), and the checkpoint holds every rank's RNG.
    folder, _ = runs
    whole, resumed = log(folder / "dropout"), log(folder / "resumed")
    assert sorted(resumed) == [4, 5, 6]
    assert all(resumed[s]["loss"] == whole[s]["loss"] for s in resumed)
    assert weight_difference(folder / "dropout" / "step-000006", folder / "resumed" / "step-000006") == 0
    one = log(folder / "one")
    print(f"DDP with dropout 0.1, resumed at step 3: steps 4-6 equal; {whole[6]['loss'] - one[6]['loss']:+.3f} at 6")


def test_each_rank_weighs_its_rows_by_their_labels(monkeypatch):
    # Instructions: rows count different numbers of labels, and the ranks' weighted mean losses average to the
    # whole batch's mean, as DDP averages their gradients.
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=20, n_positions=8, n_embd=16, n_layer=1, n_head=2, eos_token_id=19))
    x = torch.randint(20, (4, 8))
    y = x.clone()
    y[0, :6] = y[1, 5:] = y[3, 1:3] = IGNORE
    whole = model(x, labels=y).loss
    monkeypatch.setattr(distributed, "size", lambda: 2)
    ranks = []
    for r in range(2):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        xs, ys, weight = distributed.share(x, y)
        assert len(xs) == 2
        ranks.append(model(xs, labels=ys).loss * weight)
    assert abs(sum(ranks) / 2 - whole) < 1e-6


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(
        ValueError, match="--batch-size 6 .* does not split over 4 processes; give a multiple of 4, as 8"
    ):
        distributed.check_batch_size(6, processes=4)
    distributed.check_batch_size(6, processes=2)
    text = word_text(tmp_path / "words.txt", lines=60)
    result = run_cli("train", str(text), *RUN, "--steps", "1", "--out", str(tmp_path / "out"), "--fsdp")
    print(result.stderr.strip())
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "--fsdp shards the model over the processes of torchrun; run it as torchrun" in result.stderr
