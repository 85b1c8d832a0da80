"""LoRA runs (minigpt2/training/lora.py): the spec, its defaults and its bad parts in one line; only the adapters
train; the checkpoint in PEFT's layout, which PeftModel loads over transformers' base to the trained model's
logits, and minigpt2 loads merged and kept separate; resume bit for bit; the command's --lora."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file
from test_train_runs import word_text
from transformers import GPT2LMHeadModel

import minigpt2
from minigpt2 import GPT2, CheckpointError
from minigpt2.lora import PROJECTIONS, adapters
from minigpt2.training import TrainConfig, checkpoints, resume, train
from minigpt2.training.lora import LoraSpec

peft = pytest.importorskip("peft")

SPEC = "r=8,alpha=16,targets=c_attn,c_proj,c_fc"
TOLERANCE = 1e-5


def lora_config(tiny_checkpoint, tmp_path, **overrides) -> TrainConfig:
    fields = {
        "out": str(tmp_path / "out"), "model": str(tiny_checkpoint), "lora": SPEC, "steps": 3, "batch_size": 2,
        "block_size": 32, "lr": 1e-2, "eval_batches": 2, "log_every": 0, "tensorboard": False,
    }  # fmt: skip
    return TrainConfig(str(word_text(tmp_path / "words.txt", lines=60)), **{**fields, **overrides})


def test_the_spec_and_its_defaults():
    assert LoraSpec.parse(SPEC) == LoraSpec(8, 16.0, ("c_attn", "c_proj", "c_fc"), 0.0)
    assert LoraSpec.parse("r=4") == LoraSpec(4, 8.0, ("c_attn",), 0.0)  # alpha 2r, c_attn, no dropout
    assert LoraSpec.parse("") == LoraSpec(8, 16.0, ("c_attn",), 0.0)
    assert LoraSpec.parse("targets=c_fc, c_proj,dropout=0.05,alpha=3") == LoraSpec(8, 3.0, ("c_fc", "c_proj"), 0.05)


@pytest.mark.parametrize(
    "spec, why",
    [
        ("r=0", "r must be a positive integer, got 0"),
        ("r=8.5", "r must be an integer, got '8.5'"),
        ("alpha=x", "alpha must be a number, got 'x'"),
        ("dropout=1", "dropout must be at least 0 and below 1, got 1"),
        ("rank=8", "unknown key 'rank'; the keys are r, alpha, targets, dropout"),
        ("r=4,r=8", "r is given twice"),
        ("r=8,16", "'16' is not key=value"),
        ("targets=c_attn,wte", "target 'wte' is not one of c_attn, c_proj, c_fc"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_bad_part(spec, why):
    with pytest.raises(ValueError, match=re.escape(f"--lora {spec!r}: {why}")) as error:
        LoraSpec.parse(spec)
    assert "\n" not in str(error.value)


def test_a_run_trains_the_adapters_alone_and_peft_loads_them(tiny_checkpoint, tmp_path):
    trainer = train(lora_config(tiny_checkpoint, tmp_path))
    model = trainer.model
    adapted = adapters(model)
    assert list(adapted) == [f"h.{i}.{p}" for i in range(2) for p in PROJECTIONS]  # c_proj: attention's and the MLP's
    factors = {id(p) for m in adapted.values() for p in (m.lora_A.weight, m.lora_B.weight)}
    assert {id(p) for group in trainer.optimizer.param_groups for p in group["params"]} == factors
    assert all(p.requires_grad == (id(p) in factors) for p in model.parameters())
    base = GPT2.from_pretrained(tiny_checkpoint)
    trained_state = model.state_dict()
    assert all(torch.equal(trained_state[name], t) for name, t in base.state_dict().items())  # the base frozen

    saved = tmp_path / "out" / "step-000003"
    tokenizer_files = {n for n in checkpoints.TOKENIZER_FILES if (tiny_checkpoint / n).is_file()}
    expected_files = {"adapter_config.json", "adapter_model.safetensors", checkpoints.STATE_FILE, *tokenizer_files}
    assert {p.name for p in saved.iterdir()} == expected_files
    config = json.loads((saved / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == str(tiny_checkpoint.resolve())
    assert (config["r"], config["lora_alpha"], config["fan_in_fan_out"]) == (8, 16, True)
    assert config["target_modules"] == ["c_attn", "c_proj", "c_fc"]
    stored = load_file(saved / "adapter_model.safetensors")
    assert len(stored) == 2 * len(adapted)
    assert stored["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"].shape == (8, 64)
    assert stored["base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight"].shape == (64, 8)

    ids = torch.tensor([trainer.tokenizer.encode("the cat sat on a mat and the dog ran")])
    model.eval()
    with torch.no_grad():
        ours = model(ids)
        theirs = peft.PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(tiny_checkpoint), saved).eval()
        their_logits = theirs(ids).logits
        merged = GPT2.from_pretrained(saved)(ids)
        kept = GPT2.from_pretrained(saved, merge_lora=False)(ids)
        moved = (base(ids) - ours).abs().max().item()
    differences = {
        "PeftModel": (their_logits - ours).abs().max().item(),
        "merged": (merged - ours).abs().max().item(),
        "kept separate": (kept - ours).abs().max().item(),
    }
    print(
        f"\nLoRA run: logits of the saved adapter against the trained model's {differences}; it moved them {moved:.2f}"
    )
    assert all(d <= TOLERANCE for d in differences.values()) and moved > 100 * TOLERANCE


def test_resume_continues_a_lora_run_bit_for_bit(tiny_checkpoint, tmp_path):
    # The adapters' dropout draws from the torch RNG, which the checkpoint restores.
    config = lora_config(tiny_checkpoint, tmp_path, lora="r=8,dropout=0.1", steps=4, save_every=2)
    whole = train(config)
    again = tmp_path / "again"
    again.mkdir()
    (tmp_path / "out" / "step-000002").rename(again / "step-000002")
    resumed = resume(again / "step-000002")
    assert [r["step"] for r in resumed.history] == [3, 4]
    for a, b in zip(whole.history[2:], resumed.history, strict=True):
        assert (a["loss"], a["grad_norm"], a.get("val_loss")) == (b["loss"], b["grad_norm"], b.get("val_loss"))
    for (name, p), q in zip(whole.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    adapter = "step-000004/adapter_model.safetensors"
    assert (again / adapter).read_bytes() == (tmp_path / "out" / adapter).read_bytes()
    print(f"\nLoRA resumed at step 2: losses {[round(r['loss'], 6) for r in resumed.history]}, equal bit for bit")
    with pytest.raises(
        CheckpointError, match=r"adapters are not those of --lora r=2,alpha=4,targets=c_attn,dropout=0;"
    ):
        resume(again, steps=5, lora="r=2")


def test_the_command_trains_lora_and_refuses_what_it_cannot(tiny_checkpoint, tmp_path):
    text = word_text(tmp_path / "words.txt", lines=60)
    run = [str(text), "--model", str(tiny_checkpoint), "--steps", "1", "--batch-size", "2", "--block-size", "32",
           "--log-every", "0", "--eval-batches", "1", "--no-tensorboard"]  # fmt: skip
    result = run_cli("train", *run, "--out", str(tmp_path / "out"), "--lora")  # every default
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "out" / "step-000001" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["target_modules"], config["lora_dropout"]) == (
        8,
        16,
        ["c_attn"],
        0,
    )
    model, _ = minigpt2.load(tmp_path / "out" / "step-000001")  # merged over the base it names
    assert model.config.n_layer == 2
    for args, message in [
        (["--lora", "r=8,targets=wte"], "--lora 'r=8,targets=wte': target 'wte' is not one of c_attn, c_proj, c_fc"),
        (["--lora", "r=8", "--model", str(tmp_path / "out" / "step-000001")], "is a LoRA adapter itself"),
    ]:
        result = run_cli("train", *run, *args, "--out", str(tmp_path / "new"))
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    with pytest.raises(ValueError, match="--lora trains adapters over a checkpoint: give --model"):
        train(TrainConfig(str(text), out=str(tmp_path / "new"), lora="", n_layer=1, n_head=1, n_embd=8))
