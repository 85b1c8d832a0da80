"""What the scoring commands show while they work, and what they check first: on a terminal, a line of
progress on stderr rewritten in place that names what they do (scoring, comparing); in a pipe, nothing;
an output path that cannot be written refused before any model loads."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess

import pytest
from conftest import run_cli
from scoring_cases import examples_for, long_text

from minigpt2 import parity
from minigpt2.cli import main


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_on_terminal(*args: str) -> subprocess.CompletedProcess:
    """The `minigpt2` command's main() in this process, stderr a terminal (stdout captured)."""
    stdout, stderr = io.StringIO(), Terminal()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def files(tmp_path, tiny):
    """A text to score and multiple-choice questions, in tmp_path."""
    text, questions = tmp_path / "text.txt", tmp_path / "questions.jsonl"
    text.write_text(long_text(25, seed=3))
    questions.write_text("".join(json.dumps(example) + "\n" for example in examples_for(tiny[1])))
    return {"perplexity": text, "multiple-choice": questions}


@pytest.mark.parametrize(
    "command, options, last",
    [
        ("perplexity", ("--stride", "64"), r"scored (\d+)/\1 tokens \(100%\)"),
        ("multiple-choice", (), r"scored 5/5 examples \(100%\)"),
    ],
)
def test_scoring_shows_progress_on_a_terminal_and_nothing_in_a_pipe(files, tiny_checkpoint, command, options, last):
    args = (command, str(files[command]), "--model", str(tiny_checkpoint), *options)
    shown = run_on_terminal(*args)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stderr.split("\n")
    print(f"minigpt2 {command} on a terminal, stderr: {shown.stderr!r}")
    assert lines[0].startswith("loading ") and lines[1].endswith("; scoring ...")  # not "generating"
    steps = lines[2].split("\r")[1:]  # one line, rewritten in place, ended when all is scored
    assert len(steps) > 1 and re.fullmatch(last, steps[-1].removesuffix("\x1b[K")) and lines[3:] == [""]
    piped = run_cli(*args)
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout == shown.stdout


def test_parity_shows_progress_on_a_terminal(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(parity, "GREEDY_TOKENS", 5)
    shown = run_on_terminal("parity", str(tiny_checkpoint), "--json", "-")
    assert shown.returncode == 0, shown.stderr
    print(f"minigpt2 parity on a terminal, stderr: {shown.stderr!r}")
    first, counted, end = shown.stderr.split("\n")
    assert first.startswith(f"loading {tiny_checkpoint} in minigpt2 and in transformers") and end == ""
    steps = [step.removesuffix("\x1b[K") for step in counted.split("\r")[1:]]
    assert steps == [f"compared {n}/4 prompts ({n / 4:.0%})" for n in range(1, 5)]
    assert json.loads(shown.stdout)["passed"]


@pytest.mark.parametrize("command", ["perplexity", "multiple-choice", "parity"])
def test_a_json_path_that_cannot_be_written_is_refused_before_the_model_loads(tmp_path, files, command):
    """The model named does not exist: an error about the path shows that the path was checked first."""
    missing_model = str(tmp_path / "no-model")
    args = [missing_model] if command == "parity" else [str(files[command]), "--model", missing_model]
    result = run_cli(command, *args, "--json", "/nonexistent/x.json")
    print(f"minigpt2 {command} --json /nonexistent/x.json: exit {result.returncode}, {result.stderr!r}")
    assert result.returncode != 0 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "cannot write /nonexistent/x.json: the folder /nonexistent does not exist" in result.stderr
