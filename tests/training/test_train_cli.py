"""`minigpt2 train` on bad input: one line on stderr, exit status 1, and the last good checkpoint untouched."""

from __future__ import annotations

import hashlib
import warnings as warnings_module

import pytest
import torch
from conftest import run_cli

import minigpt2
import minigpt2.cli
import minigpt2.training.config
from minigpt2.cli import train as train_cli
from minigpt2.training.config import autocast_dtype

TINY_RUN = ["--char", "--n-layer", "2", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
            "--log-every", "0", "--eval-batches", "2"]  # fmt: skip


@pytest.fixture(autouse=True)
def train_command(monkeypatch):
    """`minigpt2 train`, as the command table will hold it."""
    monkeypatch.setitem(minigpt2.cli.SUBCOMMANDS, "train", train_cli)


def fails(*args) -> str:
    result = run_cli("train", *map(str, args))
    lines = result.stderr.splitlines()
    print(result.stderr.strip())
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("minigpt2 train: error: ")
    return lines[0]


def snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def run_folder(tmp_path):
    """A run of 2 steps: data, and out/ with its checkpoint."""
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 40)
    result = run_cli("train", str(text), "--out", str(tmp_path / "out"), "--steps", "2", *TINY_RUN)
    assert result.returncode == 0, result.stderr
    return text, tmp_path / "out"


def test_empty_and_binary_data(tmp_path):
    (tmp_path / "empty.txt").write_text(" \n")
    assert "empty.txt is empty" in fails(tmp_path / "empty.txt", *TINY_RUN, "--out", tmp_path / "out")
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)))
    assert "is not UTF-8 text" in fails(tmp_path / "blob.txt", *TINY_RUN, "--out", tmp_path / "out")
    (tmp_path / "nul.txt").write_bytes(b"text\0\0\0")
    assert "is binary" in fails(tmp_path / "nul.txt", *TINY_RUN, "--out", tmp_path / "out")


def test_block_size_above_the_context(tiny_checkpoint, run_folder):
    text, out = run_folder
    line = fails(text, "--model", tiny_checkpoint, "--block-size", 256, "--out", out.parent / "ft")
    assert "--block-size 256 is longer than the model's context (n_positions 128)" in line


def test_val_split_shorter_than_a_block(tmp_path):
    (tmp_path / "short.txt").write_text("a few words, not many more than this.")
    line = fails(tmp_path / "short.txt", *TINY_RUN, "--out", tmp_path / "out")
    assert "the val split has 3 tokens, fewer than one block (16)" in line


def test_resume_of_another_shape_and_a_new_run_over_checkpoints(run_folder):
    text, out = run_folder
    before = snapshot(out)
    line = fails("--resume", out, "--n-layer", 3, "--steps", 4)
    assert "holds a model of 2 layers, 2 heads, 16 wide" in line and "3 layers" in line
    assert "holds checkpoints already (step-000002); continue with --resume" in fails(text, *TINY_RUN, "--out", out)
    assert snapshot(out) == before


def test_nan_loss_stops_the_run_and_names_the_step(run_folder):
    _, out = run_folder
    before = snapshot(out)
    line = fails("--resume", out, "--steps", 6, "--lr", "1e30", "--save-every", 1)
    assert "the loss is nan at step" in line and "the run stops" in line
    saved = sorted(p.name for p in out.glob("step-*"))
    assert "step-000002" in saved and snapshot(out / "step-000002") == {
        k.relative_to("step-000002"): v for k, v in before.items() if k.parts[0] == "step-000002"
    }
    model, _ = minigpt2.load(out / "step-000002")  # still loads
    assert model.config.n_layer == 2


def test_bf16_on_a_cpu_that_emulates_it_warns_in_one_line(tmp_path, monkeypatch):
    """A CPU without bf16 kernels (AVX2 only) runs a bf16 step 10-40x slower than fp32: the run says so, once,
    in one line, and trains; on one with them it says nothing."""
    monkeypatch.setattr(minigpt2.training.config, "native_bf16", lambda: False)
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 40)
    out = str(tmp_path / "out")
    result = run_cli("train", str(text), "--out", out, "--steps", "1", "--dtype", "bfloat16", *TINY_RUN)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    print(warnings)
    assert len(warnings) == 1 and warnings[0].startswith("minigpt2 train: warning: bfloat16 on this CPU")
    monkeypatch.setattr(minigpt2.training.config, "native_bf16", lambda: True)
    with warnings_module.catch_warnings():
        warnings_module.simplefilter("error")  # no warning where the CPU has bf16 kernels
        autocast_dtype("bfloat16", torch.device("cpu"), fsdp=False)
