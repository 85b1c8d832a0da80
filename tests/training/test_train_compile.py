"""--compile (training/compiling.py): on the CPU the first steps are timed eager and compiled and the faster
goes on; the choice is logged, saved and kept by a resume; --gradient-checkpointing trains the same run."""

from __future__ import annotations

import json
from dataclasses import replace

import torch
from test_train_runs import char_config

from minigpt2.training import Trainer, checkpoints, resume, train
from minigpt2.training.compiling import TRIALS, StepModule


def test_the_faster_way_is_chosen_from_the_timed_steps(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module: module)  # the choice alone, not a compiler
    model = torch.nn.Linear(2, 2)
    for compiled_seconds, chosen in ((0.5, True), (2.0, False)):
        step = StepModule(model, torch.device("cpu"), wanted=True)
        rows = [step.timed(s) for s in [9.0] + [1.0] * (TRIALS - 1) + [30.0] + [compiled_seconds] * (TRIALS - 1)]
        assert rows[:-1] == [{}] * (2 * TRIALS - 1) and step.chosen is chosen
        print(rows[-1]["note"])
        assert rows[-1]["compile"] == ("compiled" if chosen else "eager")
        assert rows[-1]["eager_ms"] == 1000 and rows[-1]["compiled_ms"] == compiled_seconds * 1000
        assert (step.compiled is None) is (not chosen) and step.timed(1.0) == {}
    assert StepModule(model, torch.device("cuda"), wanted=True).chosen is True  # a GPU compiles from the start
    assert StepModule(model, torch.device("cpu"), wanted=False).compiled is None
    assert StepModule(model, torch.device("cpu"), wanted=True, chosen=False).compiled is None  # a resume's


def test_a_compiled_run_decides_logs_and_resumes_with_its_choice(tmp_path):
    # A real compile of a tiny model. Its first TRIALS steps are eager, so they are the eager run's exactly.
    steps = 2 * TRIALS + 2
    config = char_config(tmp_path, n_layer=1, n_embd=32, steps=steps, eval_every=steps, save_every=2 * TRIALS)
    (tmp_path / "eager").mkdir()
    eager = Trainer(replace(config, out=str(tmp_path / "eager" / "out")))
    eager_losses = [eager.train_step()["loss"] for _ in range(TRIALS)]
    trainer = train(replace(config, compile=True))
    rows = trainer.history
    assert [r["loss"] for r in rows[:TRIALS]] == eager_losses
    decided = rows[2 * TRIALS - 1]
    print(decided["note"])
    assert decided["compile"] in ("compiled", "eager") and "note" not in rows[-1]
    saved = checkpoints.read_state(tmp_path / "out" / f"step-{2 * TRIALS:06d}")
    assert saved["compiled"] is (decided["compile"] == "compiled")
    logged = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert logged[2 * TRIALS - 1]["compile"] == decided["compile"]
    again = resume(tmp_path / "out" / f"step-{2 * TRIALS:06d}", out=str(tmp_path / "again"))
    assert again.step_module.chosen is saved["compiled"]
    assert [r["loss"] for r in again.history] == [r["loss"] for r in rows[2 * TRIALS :]]  # bit for bit


def test_gradient_checkpointing_trains_the_same_run(tmp_path):
    for name in ("plain", "recomputed"):
        (tmp_path / name).mkdir()
    plain = Trainer(char_config(tmp_path / "plain", steps=2))
    recomputed = Trainer(char_config(tmp_path / "recomputed", steps=2, gradient_checkpointing=True))
    assert recomputed.model.gradient_checkpointing and not plain.model.gradient_checkpointing
    a, b = plain.fit(), recomputed.fit()
    difference = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))
    print(f"2 steps with and without gradient checkpointing: losses within {difference:.1e}")
    assert difference < 1e-6
