"""scripts/benchmark.py and scripts/bench/: the benchmark runs end to end, every section and the JSON figures
(its numbers are reported, never asserted)."""

import json

import pytest
from bench import peers  # scripts/, on the path through conftest
from conftest import run_script


def test_benchmark_smoke(tiny_checkpoint, tmp_path):
    args = ["--model", str(tiny_checkpoint), "--rounds", "1", "--new-tokens", "4", "--prefill", "16"]
    every_but_load = "decode,multitoken,prefill,batched,beam,scoring,assisted,patching,explore"
    result = run_script(
        "benchmark.py",
        *args,
        "--batch-sizes",
        "1,2",
        "--sections",
        every_but_load,
        "--json",
        str(tmp_path / "bench.json"),
    )
    assert result.returncode == 0, result.stderr
    for line in (
        "decode tok/s, batch 1, float32",
        "decode tok/s, batch 1, bfloat16",
        "decode tok/s, batch 1, int8",
        "prefill tok/s",
        "perplexity tok/s, stride",
        "batch 2",
        "beam search tok/s, 4 beams",
        "assisted greedy decoding",
        "prompt lookup",
        "transformers' prompt lookup",
        "activation patching, resid_pre, 40 patches",
        "k new tokens in one cached pass, cost against k = 1",
        "minigpt2 float32, fast=True",
        "transformers bfloat16",
        "fast=True's kernels in float32 on this CPU",
    ):
        assert line in result.stdout
    if peers.missing() is None:  # the bench extra is installed: llama.cpp runs in the same rounds
        assert all(f"llama.cpp {kind}" in result.stdout for kind in ("F32", "BF16", "Q8_0"))
        assert "llama.cpp Q8_0 vs llama.cpp F32: max logit difference" in result.stdout
    else:
        assert "llama.cpp left out" in result.stdout
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert set(figures["decode"]) == {"float32", "bfloat16", "int8"} and figures["bandwidth_bytes_per_s"] > 0
    assert {"minigpt2 int8", "minigpt2 bfloat16, fast=True", "transformers float32"} <= set(figures["multitoken"])
    assert all(set(f["ratio"]) == {"1", "2", "4", "8", "16"} for f in figures["multitoken"].values())
    modes = ("float32", "float32, fast=True", "bfloat16")
    assert set(figures["assisted"]) == {f"{m}, {p}" for m in modes for p in ("a repeated passage", "8 random tokens")}
    drafts = {"first 1 blocks", "unrelated 1x48", "unrelated 2x128", "prompt lookup"}
    assert all(set(f["acceptance"]) == drafts for f in figures["assisted"].values())
    theirs = {"transformers plain greedy", "transformers prompt lookup"}
    assert theirs <= set(figures["assisted"]["float32, 8 random tokens"]["tokens_per_s"])
    assert figures["weight_bytes"]["int8"] < figures["weight_bytes"]["bfloat16"] < figures["weight_bytes"]["float32"]


@pytest.mark.parametrize("section", ["load", "train"])
def test_benchmark_smoke_in_fresh_processes(tiny_checkpoint, section):
    # The sections that start fresh processes (a load, a run's peak memory), with one dtype; each a test of
    # its own, so that the parts of the smoke run side by side.
    args = ["--model", str(tiny_checkpoint), "--rounds", "1", "--new-tokens", "4", "--prefill", "16"]
    train = ["--train-shapes", "recipe", "--train-steps", "1"]
    fresh = run_script("benchmark.py", *args, "--sections", section, "--dtypes", "float32", *train)
    assert fresh.returncode == 0, fresh.stderr
    assert "decode tok/s, batch 1" not in fresh.stdout
    if section == "load":
        assert "load float32" in fresh.stdout
    else:
        assert "train tok/s, recipe shape, float32" in fresh.stdout and "peak memory: minigpt2" in fresh.stdout
