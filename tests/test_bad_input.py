"""Bad input that the other test files do not already cover: hub answers, sampling numbers, broken tensors via the CLI.

Already covered elsewhere: broken, truncated and mismatched checkpoints through the API
(test_checkpoint), missing paths and devices (test_checkpoint, test_cli), no network with nothing
cached (test_hub, test_cli), bad lengths and ids (test_model), bad sampling and padding arguments
(test_generation), ids outside the vocabulary and characters cut between tokens (test_tokenizer).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file, save_file

from minigpt2 import Tokenizer


def test_decoding_ids_that_split_a_character(tiny_checkpoint):
    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    ids = tokenizer.encode("한")
    assert len(ids) > 1  # this vocabulary has no token for the whole character
    assert tokenizer.decode(ids[:1]) == "\ufffd"  # defined: U+FFFD, never an exception
    assert tokenizer.decode(ids) == "한"


def break_tensors(change):
    def breakage(directory):
        state = load_file(directory / "model.safetensors")
        change(state)
        save_file(state, directory / "model.safetensors")

    return breakage


@pytest.mark.parametrize(
    "args, breakage, message",
    [
        (["--do-sample", "--temperature", "0"], None, "temperature must be above 0"),
        (["--do-sample", "--top-p", "1.5"], None, "top_p must be in (0, 1]"),
        (["--top-k", "-1"], None, "argument --top-k: expected a whole number of at least 0"),
        (["--top-p", "0.5"], None, "top_p only applies when sampling"),
        (["--explain", "0"], None, "argument --explain: expected a whole number of at least 1"),
        (["--temperature", "warm"], None, "argument --temperature: expected a number"),
        ([], break_tensors(lambda s: s.pop("h.0.attn.c_attn.weight")), "missing: h.0.attn.c_attn.weight"),
        ([], break_tensors(lambda s: s.update(surplus=torch.zeros(2))), "unexpected: surplus"),
        ([], break_tensors(lambda s: s.update({"wpe.weight": torch.zeros(7, 64)})), "wrong shape: wpe.weight (7, 64)"),
        (["--stream", "--num-return-sequences", "2"], None, "--stream prints one row"),
        (["--compile", "--no-cache"], None, "argument --no-cache: not allowed with argument --compile"),
    ],
)
def test_cli_refuses_with_one_line(tiny_checkpoint, tmp_path, args, breakage, message):
    target = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, target)
    if breakage:
        breakage(target)
    result = run_cli("Hello", "--model", str(target), *args)
    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
