"""What a run probes besides the loss (minigpt2/training/track.py): --track's head scores, equal to the head
detectors' on the same model and probe and resumed bit for bit; --eval-choices' accuracy; and a Hugging Face
data set (hf:NAME) as the data, tokenized once into the same cache."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from minigpt2.interp.heads import head_scores, induction_scores
from minigpt2.scoring import multiple_choice
from minigpt2.training import TrainConfig, Trainer, data, resume, train
from minigpt2.training.track import HeadTracker

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "big", "red"]
LAYERS, HEADS = 2, 4


def lines(n=300, seed=0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(8)) + "." for _ in range(n)]


def config(tmp_path, data_path=None, **overrides) -> TrainConfig:
    if data_path is None:
        data_path = tmp_path / "words.txt"
        data_path.write_text("\n".join(lines()))
    fields = {
        "out": str(tmp_path / "out"), "char": True, "n_layer": LAYERS, "n_head": HEADS, "n_embd": 32,
        "block_size": 32, "batch_size": 8, "lr": 3e-3, "steps": 6, "eval_every": 3, "eval_batches": 2,
        "log_every": 0, "tensorboard": False,
    }  # fmt: skip
    return TrainConfig(str(data_path), **{**fields, **overrides})


def test_tracked_scores_are_the_head_detectors(tmp_path):
    trainer = train(config(tmp_path, track_every=3, plot=True))
    tracked = [row for row in trainer.history if "track" in row]
    assert [row["step"] for row in tracked] == [3, 6]
    row = tracked[-1]
    for kind in ("induction", "previous_token", "entropy"):
        assert torch.tensor(row["track"][kind]).shape == (LAYERS, HEADS), kind
    scores = torch.tensor([row["track"]["induction"], row["track"]["previous_token"]])
    assert scores.min() >= 0 and scores.max() <= 1
    assert row["induction_max"] == pytest.approx(max(map(max, row["track"]["induction"])), abs=1e-4)
    T = trainer.probes[0].tokens.size(1)
    entropy = torch.tensor(row["track"]["entropy"])
    assert entropy.min() >= 0 and entropy.max() <= math.log(T)
    assert len(row["track"]["resid_norm"]) == LAYERS + 1 and min(row["track"]["resid_norm"]) > 0

    # The same model (the last row is the trained model's) and probe, through heads.py itself.
    tracker, model = trainer.probes[0], trainer.model
    rng = torch.get_rng_state()
    got = tracker.scores(model)
    assert model.training and torch.equal(torch.get_rng_state(), rng)  # back in train(), no draws
    model.eval()
    previous = torch.stack([head_scores(model, t, "previous_token") for t in tracker.tokens]).mean(dim=0)
    torch.testing.assert_close(got["induction"], induction_scores(model, tracker.tokens), rtol=0, atol=1e-6)
    torch.testing.assert_close(got["previous_token"], previous, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(row["track"]["induction"]), got["induction"], rtol=0, atol=1e-4)
    # The probe is fixed: a seeded random sequence repeated twice, the same for every tracker of the run.
    again = HeadTracker(3, model.config.vocab_size, trainer.block_size, trainer.config.seed).tokens
    half = T // 2
    assert torch.equal(again, tracker.tokens) and torch.equal(again[:, :half], again[:, half:])
    assert (tmp_path / "out" / "loss.png").is_file() and (tmp_path / "out" / "track.png").is_file()


def test_a_tracked_run_resumes_bit_for_bit(tmp_path):
    # Dropout on: the torch RNG must be where an untracked step would leave it.
    whole = train(config(tmp_path, track_every=2, save_every=3, dropout=0.1))
    (tmp_path / "again").mkdir()
    (tmp_path / "out" / "step-000003").rename(tmp_path / "again" / "step-000003")
    resumed = resume(tmp_path / "again" / "step-000003")
    assert [r["step"] for r in resumed.history] == [4, 5, 6]
    for a, b in zip(whole.history[3:], resumed.history, strict=True):
        assert (a["loss"], a["grad_norm"], a.get("track")) == (b["loss"], b["grad_norm"], b.get("track"))
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_eval_choices_logs_the_accuracy_at_every_val_loss(tmp_path):
    rng = random.Random(1)
    questions = [
        {"context": " ".join(rng.choice(WORDS) for _ in range(4)), "endings": rng.sample(WORDS, 3), "label": i % 3}
        for i in range(6)
    ]
    path = tmp_path / "choices.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in questions))
    trainer = train(config(tmp_path, eval_choices=str(path)))
    rows = [row for row in trainer.history if "choice_accuracy" in row]
    assert [row["step"] for row in rows] == [3, 6] and all("val_loss" in row for row in rows)
    result = multiple_choice(trainer.model.eval(), trainer.tokenizer, questions)
    assert (rows[-1]["choice_accuracy"], rows[-1]["choice_accuracy_norm"]) == (result.acc, result.acc_norm)
    # A question longer than the model's context is refused before the first step, not at the first eval.
    path.write_text(json.dumps({**questions[0], "context": "the cat " * 10}))
    with pytest.raises(ValueError, match=r"choices.jsonl: example 0: 84 tokens, longer than the context \(32\)"):
        Trainer(config(tmp_path, eval_choices=str(path), out=str(tmp_path / "refused")))


def test_a_hugging_face_data_set_is_tokenized_once_into_the_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="hf:NAME data needs the datasets library (the train extra)")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets.disable_progress_bars()
    stories = lines(200)
    saved = tmp_path / "saved"  # a save_to_disk folder, as one copied from a machine with the hub
    columns = {"story": stories, "n": list(range(200))}
    datasets.DatasetDict(train=datasets.Dataset.from_dict(columns)).save_to_disk(saved)
    trainer = train(config(tmp_path, f"hf:{saved}", text_field="story", steps=2))
    assert trainer.config.data == f"hf:{saved}" and "val_loss" in trainer.history[-1]
    cached = list((tmp_path / "hf-cache" / "minigpt2-tokens").glob("*/tokens.bin"))
    assert len(cached) == 1
    eos = trainer.vocab.eos_token_id
    expected = [t for i, s in enumerate(stories) for t in ([eos] if i else []) + trainer.vocab.encode(s)]
    assert torch.from_file(str(cached[0]), size=len(expected), dtype=torch.uint16).long().tolist() == expected

    # load_dataset on a local folder of data files: its fingerprint, so the key, follows the content.
    folder = tmp_path / "jsonl"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in stories))
    vocab = trainer.vocab
    key = data.token_streams(data.source(f"hf:{folder}"), vocab, vocab.fingerprint)[2]
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in stories[:100]))
    assert data.token_streams(data.source(f"hf:{folder}"), vocab, vocab.fingerprint)[2] != key
    with pytest.raises(ValueError, match="has no 'story' column; give --text-field text"):
        data.source(f"hf:{folder}", text_field="story").dataset
    with pytest.raises(ValueError, match="has no split 'test'; give --dataset-split train"):
        data.source(f"hf:{saved}", split="test").dataset


def test_without_datasets_hf_data_says_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[train\]"'):
        data.source("hf:roneneldan/TinyStories").dataset
