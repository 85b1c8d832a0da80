"""Hostile and broken files never crash (issue 33): hypothesis truncates, bit-flips and edits each file a
checkpoint or a task brings (config.json, generation_config.json, tokenizer.json, vocab.json, merges.txt,
the safetensors header, a torch.save .pth, a multiple-choice JSONL), and each case must end as the README
promises.

    API   minigpt2.load, then two greedy tokens: they work, or a CheckpointError, or a ValueError of ours
          that names the file (not a bare JSONDecodeError or UnicodeDecodeError, which name no file)
    CLI   the loop script (or multiple-choice, for the JSONL): exit 0, or one line on stderr
    hang  every case within CASE_SECONDS (an edited shape could ask for a model of a billion layers)

The cases are derandomized, the same on every run (BROKEN_FILE_CASES=500 searches deeper); each file's
count is printed (pytest -s)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigpt2 import CheckpointError, load

CASES = int(os.environ.get("BROKEN_FILE_CASES", 15))  # per file; more for a deeper search
CASE_SECONDS = 10
FILES = ("config.json", "generation_config.json", "tokenizer.json", "vocab.json", "merges.txt", "model.safetensors")
GENERATION_CONFIG = {"bos_token_id": 0, "eos_token_id": 0, "max_length": 50, "do_sample": False}
QUESTIONS = [{"context": "Once upon a time", "endings": [" there was", " the end"], "label": 0}] * 2
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-3, 10**6), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
counts: dict[str, int] = {}


@pytest.fixture(scope="module")
def pristine(tiny_checkpoint, reference, tmp_path_factory) -> Path:
    """The tiny checkpoint with a generation_config.json, a .pth of its weights and a JSONL task beside it."""
    folder = tmp_path_factory.mktemp("pristine") / "model"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG))
    torch.save(reference.state_dict(), folder.parent / "finetune.pth")
    (folder.parent / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return folder


@pytest.fixture(scope="module")
def pristine_for(pristine, finetuned_checkpoint):
    """The folder a file is broken in: tokenizer.json is a fine-tune's (the tiny checkpoint has vocab.json
    and merges.txt)."""
    return lambda name: finetuned_checkpoint if name == "tokenizer.json" else pristine


def broken(draw, data: bytes, edit=None, within: int | None = None) -> bytes:
    """data cut short, one bit flipped (in its first `within` bytes), or, where edit(draw, data) says how,
    one value changed."""
    within = within or len(data)
    how = draw(st.sampled_from(["truncate", "flip"] + (["edit"] if edit else [])))
    if how == "truncate":
        return data[: draw(st.integers(0, within - 1))]
    if how == "flip":
        flipped = bytearray(data)
        flipped[draw(st.integers(0, within - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(flipped)
    return edit(draw, data)


def edit_json(draw, data: bytes) -> bytes:
    """One value of the JSON, at any depth, replaced by another of any type."""
    document = json.loads(data)
    node = document
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        if not keys:
            break
        key = draw(st.sampled_from(keys[:50]))  # the first entries of a vocabulary are as good as any
        if not isinstance(node[key], (dict, list)) or not node[key] or draw(st.booleans()):
            node[key] = draw(JSON_VALUES)
            break
        node = node[key]
    return json.dumps(document).encode()


def header_size(data: bytes) -> int:
    """A safetensors file's header: an 8-byte length, then that many bytes of JSON."""
    return 8 + struct.unpack("<Q", data[:8])[0]


def edit_header(draw, data: bytes) -> bytes:
    """One field of the safetensors header edited, written back with its new length."""
    size = header_size(data)
    edited = edit_json(draw, data[8:size])
    return struct.pack("<Q", len(edited)) + edited + data[size:]


def damage(draw, name: str, data: bytes) -> bytes:
    """A broken file of this name. A safetensors file breaks in its header: its tensors' bytes are numbers,
    and any bits there are weights."""
    if name == "model.safetensors":
        return broken(draw, data, edit_header, within=header_size(data))
    return broken(draw, data, edit_json if name.endswith((".json", ".jsonl")) else None)


class TimedOut(Exception):
    pass


def within_time(fn):
    def alarm(*_):
        raise TimedOut(f"a case took more than {CASE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_api(path: Path, **options) -> None:
    try:
        model, tokenizer = load(path, **options)
        model.generate(torch.tensor([tokenizer.encode("Hello")]), max_new_tokens=2)
    except CheckpointError:
        pass
    except ValueError as e:
        assert not isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)), f"a bare {type(e).__name__}: {e}"


def check_cli(*args: str) -> None:
    result = run_cli(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 0 or (len(lines) == 1 and "Traceback" not in result.stderr), result.stderr[-2000:]


def case_settings(test):
    return settings(
        max_examples=CASES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )(test)


@pytest.mark.parametrize("name", FILES)
def test_a_broken_checkpoint_file_is_one_error(pristine_for, tmp_path, name):
    pristine = pristine_for(name)
    original = (pristine / name).read_bytes()

    @case_settings
    @given(data=st.data())
    def case(data):
        folder = tmp_path / "model"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(pristine, folder)
        (folder / name).write_bytes(damage(data.draw, name, original))
        counts[name] = counts.get(name, 0) + 1
        within_time(lambda: check_api(folder))
        within_time(lambda: check_cli("Hello", "--model", str(folder), "--max-new-tokens", "2"))

    case()
    print(f"\n{name}: {counts[name]} broken files, each one error or a run")


def test_a_broken_pth_is_one_error(pristine, tmp_path):
    original = (pristine.parent / "finetune.pth").read_bytes()

    @case_settings
    @given(data=st.data())
    def case(data):
        path = tmp_path / "finetune.pth"
        path.write_bytes(damage(data.draw, path.name, original))
        counts["pth"] = counts.get("pth", 0) + 1
        within_time(lambda: check_api(path, base=pristine))
        within_time(lambda: check_cli("Hello", "--model", str(path), "--base", str(pristine), "--max-new-tokens", "2"))

    case()
    print(f"\nfinetune.pth: {counts['pth']} broken files, each one error or a run")


def test_a_broken_task_file_is_one_line(pristine, tmp_path):
    original = (pristine.parent / "questions.jsonl").read_bytes()
    path = tmp_path / "questions.jsonl"

    @case_settings
    @given(data=st.data())
    def case(data):
        lines = original.splitlines()
        n = data.draw(st.integers(0, len(lines) - 1))
        lines[n] = damage(data.draw, path.name, lines[n])
        path.write_bytes(b"\n".join(lines) + b"\n")
        counts["jsonl"] = counts.get("jsonl", 0) + 1
        within_time(lambda: check_cli("multiple-choice", str(path), "--model", str(pristine)))

    case()
    print(f"\nquestions.jsonl: {counts['jsonl']} broken files, each one line or a run")
