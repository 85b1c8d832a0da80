"""minigpt2/parity/: the parity report (scripts/parity.py and `minigpt2 parity`) passes on a faithful model,
fine-tunes and the Korean GPT-2's layout included, locates a drift at its layer, and refuses bad input in one line.
(The model's own parity with transformers: test_model.py.)"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_script

from minigpt2 import cli, parity


def test_report_passes_on_a_faithful_checkpoint(tiny_checkpoint, tmp_path):
    result = run_script("parity.py", str(tiny_checkpoint), "--json", str(tmp_path / "parity.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["passed"] and report["first_drifting_layer"] is None
    assert list(report["prompts"]) == ["english", "korean", "code", "long"]
    assert report["prompts"]["long"]["tokens"] == 128 - parity.LONG_PROMPT_MARGIN  # near the tiny context
    for name, p in report["prompts"].items():
        assert p["tokenizer_identical"] and p["top1_agreement"] == 1.0, name
        assert p["greedy_first_difference"] is None and p["greedy_tokens"] > 0
    assert "PASS" in result.stdout and "residual stream" in result.stdout


def test_a_drift_fails_the_report_and_is_located_at_its_layer(tiny_checkpoint, monkeypatch, capsys, tmp_path):
    load = parity.load_model

    def load_with_exact_gelu_in_block_1(*args, **kwargs):
        model = load(*args, **kwargs)
        model.h[1].mlp.act = torch.nn.functional.gelu  # a subtle mistake in one layer
        return model

    monkeypatch.setattr(parity, "load_model", load_with_exact_gelu_in_block_1)
    assert cli.main(["parity", str(tiny_checkpoint), "--json", str(tmp_path / "parity.json")]) == 1
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["first_drifting_layer"] == 2  # the stream into block 2 (here: into ln_f) is the first to differ
    assert report["residual_stream_max_difference"][1] < 1e-5  # into block 1: as before
    assert "FAIL" in out and "drifts from block 2" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["./does/not/exist"], "no such file or directory"),
        (["{ckpt}", "--device", "cuda:9"], "is not available on this machine"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_checkpoint, args, message):
    result = run_script("parity.py", *[a.replace("{ckpt}", str(tiny_checkpoint)) for a in args])
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


def test_minigpt2_parity_runs_the_same_report(tiny_checkpoint, monkeypatch, capsys):
    """`minigpt2 parity` is the program scripts/parity.py runs (in a fresh interpreter, above); here in this
    process, with fewer greedy tokens, as the command's --json - prints it."""
    monkeypatch.setattr(parity, "GREEDY_TOKENS", 5)
    assert cli.main(["parity", str(tiny_checkpoint), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"]


@pytest.mark.parametrize("checkpoint", ["finetuned_checkpoint", "kogpt2_checkpoint"])
def test_report_passes_on_a_fine_tune_and_on_the_korean_gpt2_layout(checkpoint, request):
    """Checking your own fine-tune is what the report is for: tokenizer.json only, shards, KoGPT2's kind."""
    path = request.getfixturevalue(checkpoint)
    report = parity.compare(str(path))
    assert report["passed"], report
    assert all(p["tokenizer_identical"] for p in report["prompts"].values())
