"""The loop script as users run it: output on stdout, and one clear line on stderr for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli, run_script


def test_prints_the_greedy_continuation(tiny_checkpoint):
    result = run_script("generate.py", "Once upon a time", "--model", str(tiny_checkpoint), "--max-new-tokens", "20")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time") and len(result.stdout) > len("Once upon a time\n")
    assert result.stderr == ""  # progress goes to a terminal only
    for fast_or_plain in ("--no-cache", "--onednn"):  # the same greedy text by every path
        other = run_cli("Once upon a time", "--model", str(tiny_checkpoint), "--max-new-tokens", "20", fast_or_plain)
        assert other.stdout == result.stdout, fast_or_plain


def test_max_length_and_several_sequences(tiny_checkpoint):
    result = run_cli(
        "Hello", "--model", str(tiny_checkpoint), "--max-length", "12", "--num-return-sequences", "2", "--seed", "3"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line[:3] for line in lines] == ["0: ", "1: "]
    assert lines[0][3:] == lines[1][3:]  # greedy rows are identical, as in transformers


def test_a_reader_that_stops_early_is_not_an_error(tiny_checkpoint):
    """`minigpt2 ... | head -1`: output the reader no longer wants is dropped quietly, as Unix tools do (exit 141)."""
    script, prompt = ROOT / "scripts" / "generate.py", "Once upon a time"
    args = f"--model {tiny_checkpoint} --max-new-tokens 100 --explain 50"  # ~80 kB: more than a pipe holds
    command = f"{sys.executable} {script} '{prompt}' {args} | head -1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=300)
    assert result.stdout.startswith("step 1: picked") and result.stdout.count("\n") == 1
    assert result.stderr == "" and result.returncode == 141


def test_help():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in (
        "--model",
        "--max-new-tokens",
        "--max-length",
        "--num-return-sequences",
        "--device",
        "--dtype",
        "--no-cache",
        "--seed",
        "--do-sample",
        "--temperature",
        "--top-k",
        "--top-p",
        "--stream",
        "--explain",
        "--onednn",
        "--compile",
    ):
        assert option in result.stdout


def corrupt(directory):
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])


def not_gpt2(directory):
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_type": "bert"}))


@pytest.mark.parametrize(
    "args, breakage, env, message",
    [
        (["--model", "./does/not/exist"], None, {}, "no such file or directory"),
        (["--model", "{ckpt}"], corrupt, {}, "not a readable safetensors file"),
        (["--model", "{ckpt}"], not_gpt2, {}, "describes a 'bert' model, not GPT-2"),
        (["--model", "{ckpt}", "--max-new-tokens", "500"], None, {}, "longer than the model's context (128)"),
        (["--model", "{ckpt}", "--max-length", "2"], None, {}, "max_length (2) is shorter than the prompt"),
        (
            ["--model", "gpt2-medium"],
            None,
            {"HF_HUB_OFFLINE": "1"},
            "not in the local hub cache and the hub cannot be reached",
        ),
        (
            ["--model", "{ckpt}", "--device", "cuda:9"],
            None,
            {"CUDA_VISIBLE_DEVICES": ""},
            "is not available on this machine",
        ),
        (
            ["--model", "{ckpt}", "--max-new-tokens", "-4"],
            None,
            {},
            "argument --max-new-tokens: expected a whole number",
        ),
        (["--model", "{ckpt}", "--max-new-tokens", "3", "--max-length", "9"], None, {}, "not allowed with argument"),
        (["--model", "{ckpt}", "--dtype", "float8"], None, {}, "argument --dtype: invalid choice"),
        (["--model", "{ckpt}", "--num-return-sequences", "0"], None, {}, "argument --num-return-sequences"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_and_no_traceback(
    tiny_checkpoint, tmp_path, args, breakage, env, message
):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    if breakage:
        breakage(checkpoint)
    env = {"HF_HOME": str(tmp_path / "empty-hf-home"), **env} if env else None  # a fresh interpreter for those
    result = run_cli("Once upon a time", *[a.replace("{ckpt}", str(checkpoint)) for a in args], env=env)
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("minigpt2: error: ") and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("checkpoint", ["finetuned_checkpoint", "kogpt2_checkpoint"])
@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_loop_script_prints_what_transformers_generates(checkpoint, stream, request):
    """A fine-tune saved by transformers 5 and the Korean GPT-2's layout: the text is transformers' own
    greedy continuation, decoded by transformers, up to the checkpoint's eos."""
    import torch
    from test_tokenizer_files import KOGPT2_CARD
    from transformers import AutoTokenizer, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = request.getfixturevalue(checkpoint)
    prompt = "<|user|>Once upon a time" if checkpoint == "finetuned_checkpoint" else "옛날 옛적에 작은 마을에"
    result = run_cli(prompt, "--model", str(path), "--max-new-tokens", "25", stream)
    assert result.returncode == 0, result.stderr
    if checkpoint == "finetuned_checkpoint":
        tokenizer = AutoTokenizer.from_pretrained(path)
    else:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path, **KOGPT2_CARD)
    ids = torch.tensor([tokenizer.encode(prompt)])
    reference = GPT2LMHeadModel.from_pretrained(path).eval()
    out = reference.generate(
        ids,
        max_new_tokens=25,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_mask=torch.ones_like(ids),
    )[0].tolist()
    if tokenizer.eos_token_id in out[ids.size(1) :]:
        out = out[: out.index(tokenizer.eos_token_id, ids.size(1))]
    assert result.stdout == tokenizer.decode(out) + "\n"
