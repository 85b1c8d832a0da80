"""Runs of the trainer: from scratch on a text the test writes, a fine-tune that transformers loads, resume
bit for bit, a save killed half-way, and the data readers (cache, llm.c's shards, instructions)."""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel

import minigpt2
from minigpt2.training import TrainConfig, Trainer, checkpoints, data, resume, train

FROM_SCRATCH_BOUND = 1.5  # nats a character, about half the uniform ln 17 = 2.83 (16 characters and eos)


def word_text(path, lines=400, seed=0):
    """Random eight-word lines over a twelve-word vocabulary: a structure a tiny model learns in seconds."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "big", "red"]
    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) + "." for _ in range(lines)))
    return path


def char_config(tmp_path, **overrides) -> TrainConfig:
    fields = {
        "out": str(tmp_path / "out"), "char": True, "n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32,
        "batch_size": 16, "lr": 3e-3, "steps": 40, "eval_every": 20, "eval_batches": 4, "log_every": 0,
    }  # fmt: skip
    return TrainConfig(str(word_text(tmp_path / "words.txt")), **{**fields, **overrides})


def test_from_scratch_val_loss_falls_below_the_bound(tmp_path):
    trainer = train(char_config(tmp_path))
    vals = [row["val_loss"] for row in trainer.history if "val_loss" in row]
    print(f"char model, {trainer.model.num_params()} parameters: val loss {vals} (bound {FROM_SCRATCH_BOUND})")
    assert vals[-1] < FROM_SCRATCH_BOUND and vals[-1] < vals[0]
    saved = tmp_path / "out" / "step-000040"
    model, tokenizer = minigpt2.load(saved)  # the character vocabulary loads back as a tokenizer
    assert tokenizer.encode("the cat.") == trainer.vocab.encode("the cat.")
    assert tokenizer.decode(tokenizer.encode("red dog\n")) == "red dog\n"
    ids = torch.tensor([tokenizer.encode("the cat ")])
    reference = GPT2LMHeadModel.from_pretrained(saved)
    assert (model(ids) - reference(ids).logits).abs().max() < 1e-5


def test_fine_tune_loads_in_transformers_and_minigpt2(tiny_checkpoint, tmp_path):
    config = TrainConfig(
        str(word_text(tmp_path / "words.txt")), out=str(tmp_path / "out"), model=str(tiny_checkpoint), steps=3,
        batch_size=2, block_size=32, log_every=0,
    )  # fmt: skip
    trainer = train(config)
    saved = tmp_path / "out" / "step-000003"
    for name in ("vocab.json", "merges.txt"):  # the base's tokenizer files, as they were
        assert (saved / name).read_bytes() == (tiny_checkpoint / name).read_bytes()
    stored = load_file(saved / "model.safetensors")
    assert "lm_head.weight" not in stored and stored["transformer.h.0.mlp.c_fc.weight"].shape == (64, 256)
    ids = torch.tensor([trainer.tokenizer.encode("Once upon a time, the cat sat")])
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(ids)
        theirs = GPT2LMHeadModel.from_pretrained(saved).eval()(ids).logits
        model, tokenizer = minigpt2.load(saved)
        ours = model(ids)
    base = GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()(ids).logits
    print(
        f"saved fine-tune: transformers' logits within {(theirs - expected).abs().max():.2e}, minigpt2's "
        f"{(ours - expected).abs().max():.2e}; moved {(base - expected).abs().max():.2f} from the base"
    )
    assert (theirs - expected).abs().max() < 1e-5 and torch.equal(ours, expected)
    assert (base - expected).abs().max() > 1e-3  # it did train
    assert tokenizer.encode("the cat sat") == trainer.tokenizer.encode("the cat sat")


def test_resume_continues_bit_for_bit(tiny_checkpoint, tmp_path):
    # A fine-tune with gradient accumulation (two micro-batches a step) and the checkpoint's dropout, if the model
    # applies it: the torch RNG is restored too.
    config = TrainConfig(
        str(word_text(tmp_path / "words.txt")), out=str(tmp_path / "out"), model=str(tiny_checkpoint), steps=6,
        save_every=3, eval_every=3, eval_batches=2, batch_size=4, block_size=32, tokens_per_step=2 * 4 * 32,
        lr=1e-3, log_every=0,
    )  # fmt: skip
    whole = train(config)
    assert whole.micro == 2
    # Continue from step 3, in a folder of its own (resuming in `out` itself, behind step 6, is refused).
    with pytest.raises(minigpt2.CheckpointError, match="after step 3"):
        resume(tmp_path / "out" / "step-000003")
    again = tmp_path / "again"
    again.mkdir()
    (tmp_path / "out" / "step-000003").rename(again / "step-000003")
    resumed = resume(again / "step-000003")
    assert [r["step"] for r in resumed.history] == [4, 5, 6]
    for a, b in zip(whole.history[3:], resumed.history):
        assert (a["loss"], a["grad_norm"], a.get("val_loss")) == (b["loss"], b["grad_norm"], b.get("val_loss"))
    for (name, p), q in zip(whole.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(whole.batches.generator.get_state(), resumed.batches.generator.get_state())
    assert (again / "step-000006" / "model.safetensors").read_bytes() == (
        tmp_path / "out" / "step-000006" / "model.safetensors"
    ).read_bytes()
    print(f"resumed at step 3: losses {[round(r['loss'], 6) for r in resumed.history]}, equal bit for bit")


def test_a_crash_mid_save_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(char_config(tmp_path, steps=4, save_every=2, keep=1))
    real_save = torch.save

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill between the weights and the training state

    monkeypatch.setattr(checkpoints.torch, "save", lambda *a, **k: crash() if trainer.step == 4 else real_save(*a, **k))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    out = tmp_path / "out"
    assert [p.name for p in checkpoints.checkpoints(out)] == ["step-000002"]
    assert not list(out.glob(".step-*"))  # the half-written folder is gone
    # A SIGKILL leaves its half-written folder behind: it is never taken for a checkpoint, and cleared later.
    (out / ".step-000004.partial").mkdir()
    (out / ".step-000004.partial" / "model.safetensors").write_bytes(b"half")
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    model, _ = minigpt2.load(out / "step-000002")
    assert model.config.n_layer == 2
    resumed = resume(out)  # the newest complete one
    assert resumed.step == 4 and [p.name for p in checkpoints.checkpoints(out)] == ["step-000004"]
    assert not list(out.glob(".step-*"))


def test_beside_read_only_data_the_cache_is_the_users(tmp_path, monkeypatch):
    text = word_text(tmp_path / "words.txt")
    vocab = data.CharVocab.from_data(text)
    access = os.access
    read_only = lambda path, mode: False if Path(path) == tmp_path else access(path, mode)  # noqa: E731
    monkeypatch.setattr(os, "access", read_only)  # the data's folder answers as a read-only one does
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    tokens, _, key = data.token_streams(text, vocab, vocab.fingerprint)
    assert (tmp_path / "user-cache" / "minigpt2" / "tokens" / key / "tokens.bin").is_file()
    assert not (tmp_path / "words.txt.minigpt2-cache").exists()
    assert tokens[0].long().tolist() == vocab.encode(text.read_text())


def test_text_is_tokenized_once_into_a_cache_keyed_by_content(tmp_path):
    text = word_text(tmp_path / "words.txt")
    vocab = data.CharVocab.from_data(text)
    train_tokens, val, key = data.token_streams(text, vocab, vocab.fingerprint)
    cached = next((tmp_path / "words.txt.minigpt2-cache").glob("*/tokens.bin"))
    assert train_tokens[0].dtype == torch.uint16 and val is None
    assert train_tokens[0].long().tolist() == vocab.encode(text.read_text())
    stamp = cached.stat().st_mtime_ns
    assert data.token_streams(text, vocab, vocab.fingerprint)[2] == key and cached.stat().st_mtime_ns == stamp
    text.write_text(text.read_text() + " more")
    assert data.token_streams(text, vocab, vocab.fingerprint)[2] != key
    # A folder: documents in path order, the end-of-text token between them.
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("cat")
    (folder / "b.jsonl").write_text('{"text": "dog"}\n{"text": "rat"}\n')
    vocab = data.CharVocab.from_data(folder)
    tokens = data.token_streams(folder, vocab, vocab.fingerprint)[0][0].long().tolist()
    eos = vocab.eos_token_id
    assert tokens == vocab.encode("cat") + [eos] + vocab.encode("dog") + [eos] + vocab.encode("rat")


def test_llmc_shards_are_read_with_their_val_shard(tmp_path):
    def shard(path, tokens):
        header = struct.pack("<256i", *([20240520, 1, len(tokens)] + [0] * 253))
        path.write_bytes(header + struct.pack(f"<{len(tokens)}H", *tokens))

    shard(tmp_path / "tiny_train_000001.bin", list(range(100)))
    shard(tmp_path / "tiny_val_000000.bin", [65535, 7, 8])
    train_tokens, val, _ = data.token_streams(tmp_path, None, "")
    assert train_tokens[0].long().tolist() == list(range(100)) and val[0].long().tolist() == [65535, 7, 8]
    (tmp_path / "bad.bin").write_bytes(b"\0" * 2048)
    with pytest.raises(ValueError, match="not one of llm.c's token shards"):
        data.read_llmc_shard(tmp_path / "bad.bin")


def test_instructions_learn_the_completion_only(tiny_checkpoint, tmp_path):
    lines = [f'{{"prompt": "Q: {i} plus one?", "completion": " A: {i + 1}"}}' for i in range(20)]
    (tmp_path / "qa.jsonl").write_text("\n".join(lines))
    tokenizer = minigpt2.Tokenizer.from_pretrained(tiny_checkpoint)
    examples = data.read_instructions(tmp_path / "qa.jsonl", tokenizer, 64)
    prompt = tokenizer.encode("Q: 0 plus one?")
    ids, labels = examples[0]
    assert labels[: len(prompt)] == [-100] * len(prompt)
    assert labels[len(prompt) :] == ids[len(prompt) :] == tokenizer.encode(" A: 1") + [tokenizer.eos_token_id]
    short, long = sorted(examples[:2], key=lambda e: len(e[0]))
    x, y = data.Examples(examples, 4, 0, tokenizer.eos_token_id).batch([short, long])
    assert y[0, len(short[0]) :].eq(-100).all() and x[0, len(short[0]) :].eq(tokenizer.eos_token_id).all()
    trainer = train(
        TrainConfig(str(tmp_path / "qa.jsonl"), out=str(tmp_path / "out"), model=str(tiny_checkpoint),
                    instructions=True, steps=2, batch_size=4, block_size=64, lr=1e-3, log_every=0)
    )  # fmt: skip
    assert len(trainer.val_batches) == 1 and "val_loss" in trainer.history[-1]


def test_dropout_is_set_for_the_run_and_saved_and_the_curves_drawn(tiny_checkpoint, tmp_path):
    """A fine-tune takes its checkpoint's dropout (transformers' 0.1 when config.json leaves it out) unless
    dropout= is given; the saved config.json says which, and plot=True draws the loss curves."""
    text = word_text(tmp_path / "words.txt")
    base = dict(model=str(tiny_checkpoint), steps=2, batch_size=2, block_size=32, log_every=0)
    kept = Trainer(TrainConfig(str(text), out=str(tmp_path / "kept"), **base))
    assert {m.p for m in kept.model.modules() if isinstance(m, torch.nn.Dropout)} == {kept.model.config.attn_pdrop}
    trainer = train(TrainConfig(str(text), out=str(tmp_path / "out"), dropout=0.25, plot=True, **base))
    assert {m.p for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)} == {0.25}
    saved = json.loads((tmp_path / "out" / "step-000002" / "config.json").read_text())
    assert [saved[k] for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop")] == [0.25] * 3
    assert (tmp_path / "out" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        Trainer(TrainConfig(str(text), out=str(tmp_path / "bad"), dropout=1.0, **base))
