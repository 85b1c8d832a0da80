"""Training against transformers: gradients of the same loss on the same checkpoint, and ten steps of the
trainer against the same loop written over GPT2LMHeadModel with torch.optim.AdamW (llm.c's test_gpt2)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from transformers import GPT2LMHeadModel

from minigpt2 import GPT2
from minigpt2.training import TrainConfig, Trainer

GRAD_TOLERANCE = 1e-5  # of each tensor's largest gradient
LOSS_TOLERANCE = 1e-5
PROJECTIONS = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # transformers' Conv1D: [in, out]


def as_minigpt2(name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """A transformers parameter (or its gradient) under minigpt2's name and layout."""
    name = name.removeprefix("transformer.")
    return name, tensor.t() if name.endswith(PROJECTIONS) else tensor


def padded_batch(vocab: int, eos: int, side: str):
    """Three rows of 12, 7 and 3 random tokens, padded on `side`; labels -100 on padding, on the first real
    token of a left-padded row (it follows nothing real), and on a 'prompt' of row 0's first 4 tokens."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, vocab - 1, (n,), generator=g) for n in (12, 7, 3)]
    ids = torch.full((3, 12), eos)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for i, row in enumerate(rows):
        where = slice(0, len(row)) if side == "right" else slice(12 - len(row), 12)
        ids[i, where], mask[i, where] = row, 1
    before_real = torch.cat([torch.ones_like(mask[:, :1]), mask[:, :-1]], dim=1)
    labels = ids.masked_fill((mask * before_real) == 0, -100)
    labels[0, :4] = -100
    return ids, mask, labels


def largest_gradient_difference(model, reference, side: str) -> tuple[float, str]:
    """backward() of the same padded batch's loss through both: the largest difference of a parameter's
    gradient, relative to that tensor's largest gradient, and the parameter's name."""
    ids, mask, labels = padded_batch(model.config.vocab_size, model.config.eos_token_id, side)
    model(ids, attention_mask=mask, labels=labels).loss.backward()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # transformers numbers padding too unless told
    reference(ids, attention_mask=mask, position_ids=positions, labels=labels).loss.backward()
    ours = {name: p.grad for name, p in model.named_parameters()}
    theirs = dict(as_minigpt2(name, p.grad) for name, p in reference.named_parameters())
    assert ours.keys() == theirs.keys()  # the tied head is wte's one gradient in both, no lm_head.weight
    assert model.lm_head.weight is model.wte.weight
    worst = {name: ((ours[name] - g).abs().max() / g.abs().max()).item() for name, g in theirs.items()}
    name = max(worst, key=worst.get)
    return worst[name], name


@pytest.mark.parametrize("side", ["right", "left"])
def test_gradients_match_transformers(tiny_checkpoint, side):
    model = GPT2.from_pretrained(tiny_checkpoint)  # its own copy: the shared `tiny` is never given gradients
    reference = GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()
    worst, name = largest_gradient_difference(model, reference, side)
    print(f"{side}-padded: largest gradient difference {worst:.2e} of the tensor's largest ({name})")
    assert worst < GRAD_TOLERANCE


@pytest.mark.slow
def test_gradients_match_transformers_at_gpt2_medium_shape(medium):
    models = medium  # the shared pair: their gradients are cleared after, as the fixture found them
    try:
        worst, name = largest_gradient_difference(*models, "left")
    finally:
        for model in models:
            model.zero_grad(set_to_none=True)
    print(f"gpt2-medium shape, left-padded: largest gradient difference {worst:.2e} of the tensor's largest ({name})")
    assert worst < GRAD_TOLERANCE


def nanogpt_lr(step, lr, min_lr, warmup, decay_steps):
    """nanoGPT's get_lr, as train.py writes it."""
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > decay_steps:
        return min_lr
    ratio = (step - warmup) / (decay_steps - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def without_dropout(checkpoint, folder):
    """A copy of the checkpoint whose config.json turns dropout off, for both models alike."""
    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_ten_steps_match_transformers(tiny_checkpoint, tmp_path):
    tiny_checkpoint = without_dropout(tiny_checkpoint, tmp_path / "tiny")
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"line {i}: the quick brown fox jumps over {i % 7} lazy dogs." for i in range(300)))
    config = TrainConfig(
        str(text), out=str(tmp_path / "out"), model=str(tiny_checkpoint), steps=10, batch_size=4, block_size=32,
        lr=1e-3, min_lr=1e-4, warmup=2, weight_decay=0.1, beta1=0.9, beta2=0.95, grad_clip=1.0, eval_every=100,
        log_every=0,
    )  # fmt: skip
    trainer = Trainer(config)
    position = trainer.batches.state_dict()
    batches = [next(trainer.batches)[0] for _ in range(10)]  # what the trainer will draw
    trainer.batches.load_state_dict(position)
    ours = [row["loss"] for row in trainer.fit()]

    reference = GPT2LMHeadModel.from_pretrained(tiny_checkpoint).train()
    params = list(reference.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95))
    theirs = []
    for step, x in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = nanogpt_lr(step, 1e-3, 1e-4, 2, 10)
        loss = reference(x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        theirs.append(loss.item())

    diffs = [abs(a - b) for a, b in zip(ours, theirs)]
    print("losses", [f"{a:.5f}" for a in ours], f"largest difference {max(diffs):.2e}")
    assert ours[-1] < ours[0] - 0.5  # it learned
    assert max(diffs) < LOSS_TOLERANCE

    # The key bias adds q.b_k to every score of a row, which the softmax takes away: its gradient is zero but
    # for rounding (~1e-8 here), which Adam scales up to steps of size lr in either direction. It is compared
    # through what it computes, the logits, and every other weight directly.
    final = dict(as_minigpt2(name, p.detach()) for name, p in reference.named_parameters())
    C = trainer.model.config.n_embd
    weights, key_bias = {}, []
    for name, p in trainer.model.named_parameters():
        diff = (p.detach() - final[name]).abs()
        if name.endswith("attn.c_attn.bias"):
            key_bias.append(diff[C : 2 * C].max().item())
            diff = torch.cat([diff[:C], diff[2 * C :]])
        weights[name] = diff.max().item()
    name = max(weights, key=weights.get)
    trainer.model.eval()
    with torch.no_grad():
        logits = (trainer.model(batches[0]) - reference.eval()(batches[0]).logits).abs().max().item()
    print(
        f"final weights: largest difference {weights[name]:.2e} ({name}); key biases {max(key_bias):.2e}; "
        f"final logits {logits:.2e}"
    )
    assert weights[name] < LOSS_TOLERANCE and logits < LOSS_TOLERANCE
