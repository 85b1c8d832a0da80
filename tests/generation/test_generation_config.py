"""A checkpoint's generation_config.json (minigpt2/loading/config.py read_generation_defaults, and
GenerationConfig.build's precedence): written by transformers' own GenerationConfig.save_pretrained, then
`model.generate(ids)` with no arguments against transformers' `generate(ids)` on the same folder."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from conftest import run_cli
from transformers import GenerationConfig as HFGenerationConfig
from transformers import GPT2LMHeadModel

from minigpt2 import GPT2, CheckpointError

PROMPT = [[5, 17, 42, 9, 88, 3]]


def with_generation_config(tmp_path, tiny_checkpoint, **fields):
    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, folder)
    HFGenerationConfig(**fields).save_pretrained(folder)
    return folder


# Each a generation_config.json a fine-tune might ship; eos ids are picked among tokens the tiny model emits.
CONFIGS = {
    "bos/eos/pad only": dict(bos_token_id=0, eos_token_id=0),
    "max_new_tokens": dict(max_new_tokens=12),
    "max_length": dict(max_length=15),
    "repetition_penalty": dict(repetition_penalty=1.7, max_new_tokens=25),
    "no_repeat_ngram_size": dict(no_repeat_ngram_size=2, max_new_tokens=25),
    "eos list and pad": dict(eos_token_id=[7, 11, 30], pad_token_id=1, max_new_tokens=25),
    "bad_words_ids": dict(bad_words_ids=[[30], [11, 7]], max_new_tokens=25),
    "beams": dict(num_beams=3, length_penalty=0.7, early_stopping=True, max_new_tokens=10),
    "sampling": dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=20),
}


KOGPT2 = dict(bos_token_id=1, eos_token_id=1, pad_token_id=3, max_new_tokens=30)  # </s> ends a reply, as KoGPT2's


@pytest.mark.parametrize("fields", [*CONFIGS.values(), KOGPT2], ids=[*CONFIGS.keys(), "KoGPT2-style </s>"])
def test_no_arguments_generate_as_transformers_does(tmp_path, tiny_checkpoint, kogpt2_checkpoint, fields):
    folder = with_generation_config(tmp_path, kogpt2_checkpoint if fields is KOGPT2 else tiny_checkpoint, **fields)
    ours = GPT2.from_pretrained(folder)
    theirs = GPT2LMHeadModel.from_pretrained(folder).eval()
    ids = torch.tensor(PROMPT)
    torch.manual_seed(3)  # transformers draws from torch's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes about a missing attention mask
        expected = theirs.generate(ids, attention_mask=torch.ones_like(ids))
    got = ours.generate(ids, seed=3) if fields.get("do_sample") else ours.generate(ids)
    print(f"{fields}: ours {got[0, 6:].tolist()}\n{' ' * len(str(fields))}  transformers {expected[0, 6:].tolist()}")
    assert torch.equal(got, expected)
    assert ours.generation_defaults_source == str(folder / "generation_config.json")


def test_the_caller_beats_the_file_and_the_file_beats_config_json(tmp_path, tiny_checkpoint):
    folder = with_generation_config(tmp_path, tiny_checkpoint, eos_token_id=[7, 11], max_new_tokens=12)
    model = GPT2.from_pretrained(folder)
    ids = torch.tensor(PROMPT)
    assert model.generate(ids).size(1) <= 6 + 12
    assert model.generate(ids, max_new_tokens=4, eos_token_id=None).size(1) == 10
    assert model.generate(ids, max_length=9, eos_token_id=None).size(1) == 9  # a caller's length replaces the file's
    # config.json alone (no generation_config.json): its eos is the default, as in transformers
    plain = GPT2.from_pretrained(tiny_checkpoint)
    assert plain.generation_defaults["eos_token_id"] == plain.config.eos_token_id
    assert plain.generation_defaults_source == "config.json"


def test_an_eos_list_ends_a_row_at_any_of_its_ids(tiny):
    model, _ = tiny
    ids = torch.tensor(PROMPT)
    free = model.generate(ids, max_new_tokens=30, eos_token_id=None)[0, 6:].tolist()
    first, second = free[4], free[9]
    out = model.generate(ids, max_new_tokens=30, eos_token_id=[second, first], pad_token_id=0)[0, 6:].tolist()
    end = min(free.index(first), free.index(second)) + 1
    assert out == free[:end], (out, free)


def test_unknown_fields_are_ignored_and_uncomputed_ones_warn(tmp_path, tiny_checkpoint):
    folder = with_generation_config(tmp_path, tiny_checkpoint, max_new_tokens=5)
    raw = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**raw, "made_up_field": 3, "typical_p": 0.5}))
    with pytest.warns(UserWarning, match="typical_p, which minigpt2 does not compute"):
        model = GPT2.from_pretrained(folder)
    assert model.generate(torch.tensor(PROMPT), eos_token_id=None).size(1) == 11


@pytest.mark.parametrize(
    "field, value",
    [("repetition_penalty", "high"), ("max_new_tokens", -3), ("eos_token_id", "end"), ("num_beams", 0)],
)
def test_a_bad_value_names_the_file_and_the_field(tmp_path, tiny_checkpoint, field, value):
    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "generation_config.json").write_text(json.dumps({field: value}))
    with pytest.raises(CheckpointError) as error:
        GPT2.from_pretrained(folder)
    message = str(error.value)
    print(message)
    assert "generation_config.json" in message and field in message and "\n" not in message
    result = run_cli("generate", "Hello", "--model", str(folder))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert field in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_explain_names_the_defaults_from_the_checkpoint(tmp_path, tiny_checkpoint):
    folder = with_generation_config(tmp_path, tiny_checkpoint, repetition_penalty=1.3, no_repeat_ngram_size=3)
    result = run_cli("generate", "Hello", "--model", str(folder), "--max-new-tokens", "3", "--explain")
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    line = next(line for line in said.splitlines() if line.startswith("defaults from"))
    print(line)
    assert "generation_config.json" in line and "repetition_penalty" in line and "no_repeat_ngram_size" in line
