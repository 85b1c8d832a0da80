"""minigpt2 perplexity and minigpt2 multiple-choice: their figures against transformers' (the `reference`
fixture), --json, and one-line errors."""

from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli
from scoring_cases import RELATIVE, SUM_TOLERANCE, accuracy, exact_reference, examples_for, long_text, reference_choices


def one_line_error(result, *fragments):
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_perplexity_command(tmp_path, tiny_checkpoint, tiny, reference):
    _, tokenizer = tiny
    text = long_text(150, seed=2).replace("\n", "\r\n", 3)  # the file's own bytes are scored, CRLF and all
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    ids = tokenizer.encode(text)
    nll, tokens, _ = exact_reference(reference, ids, 128, 32)
    figures = tmp_path / "figures.json"
    args = ("perplexity", str(path), "--model", str(tiny_checkpoint), "--stride", "32")
    result = run_cli(*args, "--json", str(figures))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    got = json.loads(figures.read_text())
    expected = {
        "perplexity": math.exp(nll / tokens),
        "nll_sum": nll,
        "bits_per_byte": nll / len(text.encode()) / math.log(2),
        "word_perplexity": math.exp(nll / len(text.split())),
    }
    diffs = {name: abs(got[name] - value) / value for name, value in expected.items()}
    print(f"minigpt2 perplexity: {got['perplexity']:.6f} over {got['tokens']} tokens; relative diffs {diffs}")
    assert got["tokens"] == tokens and max(diffs.values()) < RELATIVE
    for figure in (
        f"{got['perplexity']:.4f}",
        f"{got['tokens']} tokens",
        f"{got['nll_sum']:.4f}",
        f"bits per byte {got['bits_per_byte']:.4f}",
        f"word perplexity {got['word_perplexity']:.4f}",
    ):
        assert figure in result.stdout, (figure, result.stdout)
    alone = run_cli(*args, "--json", "-", "--batch-size", "4")  # only the JSON, on stdout; batched the same
    assert alone.returncode == 0, alone.stderr
    batched = json.loads(alone.stdout)
    assert batched["tokens"] == tokens and math.isclose(batched["nll_sum"], nll, rel_tol=RELATIVE)


def test_perplexity_command_errors(tmp_path, tiny_checkpoint):
    model = ("--model", str(tiny_checkpoint))
    missing = tmp_path / "missing.txt"
    one_line_error(run_cli("perplexity", str(missing), *model), str(missing), "no such file")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one_line_error(run_cli("perplexity", str(empty), *model), "empty")
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\n")
    one_line_error(run_cli("perplexity", str(blank), *model), "empty")
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("café naïve".encode("latin-1"))
    one_line_error(run_cli("perplexity", str(binary), *model), "not UTF-8")
    text = tmp_path / "text.txt"
    text.write_text(long_text(20))
    one_line_error(run_cli("perplexity", str(text), *model, "--stride", "129"), "--stride 129", "128")
    for bad in ("0", "-3", "x"):
        one_line_error(run_cli("perplexity", str(text), *model, "--stride", bad), "--stride")
    one_line_error(run_cli("perplexity", str(text), "--model", str(tmp_path / "nowhere")), "nowhere")
    short = tmp_path / "short.txt"
    short.write_text("a")  # one token: nothing to predict
    one_line_error(run_cli("perplexity", str(short), *model), "at least 2 tokens")


def test_multiple_choice_command(tmp_path, tiny_checkpoint, tiny, reference):
    _, tokenizer = tiny
    examples = examples_for(tokenizer)
    examples[1] = {"ctx": examples[1]["context"], "endings": examples[1]["endings"], "label": "1"}  # HellaSwag's
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(json.dumps(example) for example in examples) + "\n\n")
    result = run_cli("multiple-choice", str(path), "--model", str(tiny_checkpoint), "--json", "-")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    for example in examples:
        example["context"], example["label"] = example.get("context", example.get("ctx")), int(example["label"])
    sums, avgs = reference_choices(reference, tokenizer, examples)
    labels = [example["label"] for example in examples]
    diff = max(
        abs(a - b)
        for got_rows, ref in ((got["sum_losses"], sums), (got["avg_losses"], avgs))
        for row_a, row_b in zip(got_rows, ref, strict=True)
        for a, b in zip(row_a, row_b, strict=True)
    )
    print(f"minigpt2 multiple-choice: acc {got['acc']}, acc_norm {got['acc_norm']}, max loss diff {diff:.2e}")
    assert got["examples"] == len(examples) and diff < SUM_TOLERANCE
    assert (got["acc"], got["acc_norm"]) == (accuracy(sums, labels), accuracy(avgs, labels))
    summary = run_cli("multiple-choice", str(path), "--model", str(tiny_checkpoint))
    assert f"acc {got['acc']:.4f}, acc_norm {got['acc_norm']:.4f} over {len(examples)}" in summary.stdout


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"context": "a", "endings": [], "label": 0}', "endings"),
        ('{"context": "a", "endings": ["b", ""], "label": 0}', "ending"),
        ('{"context": "a", "endings": ["b", "c"], "label": 2}', "label"),
        ('{"endings": ["b", "c"], "label": 0}', "context"),
    ],
)
def test_multiple_choice_command_names_the_bad_line(tmp_path, tiny_checkpoint, line, fragment):
    good = json.dumps({"context": "Once upon a time", "endings": ["there", "here"], "label": 0})
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join([good, "", line, good]) + "\n")
    one_line_error(run_cli("multiple-choice", str(path), "--model", str(tiny_checkpoint)), f"{path}:3", fragment)


def test_multiple_choice_command_errors(tmp_path, tiny_checkpoint):
    missing = tmp_path / "missing.jsonl"
    one_line_error(run_cli("multiple-choice", str(missing), "--model", str(tiny_checkpoint)), "no such file")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    one_line_error(run_cli("multiple-choice", str(empty), "--model", str(tiny_checkpoint)), "empty")
