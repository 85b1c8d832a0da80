"""minigpt2/model.py under model.train(): dropout where transformers applies it (the same masks from the same
seed give the same logits), per-block gradient checkpointing (the same gradients, fewer saved activations),
and the named points under autograd (a steering vector trained through a hook)."""

from __future__ import annotations

import torch
from transformers import GPT2Config as TransformersConfig
from transformers import GPT2LMHeadModel

from minigpt2 import GPT2, GPT2Config

DROPOUT = dict(embd_pdrop=0.1, attn_pdrop=0.2, resid_pdrop=0.3)
SHAPE = dict(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)


def twins():
    """A minigpt2 model and transformers' (eager attention, so that its pattern's dropout is a module, as ours
    is when the pattern is written out) with the same weights and dropout."""
    config = TransformersConfig(**SHAPE, **DROPOUT, bos_token_id=96, eos_token_id=96)
    config._attn_implementation = "eager"
    theirs = GPT2LMHeadModel(config)
    ours = GPT2(GPT2Config(**SHAPE, **DROPOUT, eos_token_id=96))
    state = {k.removeprefix("transformer."): v for k, v in theirs.state_dict().items() if ".attn.bias" not in k}
    for name, tensor in state.items():
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            state[name] = tensor.t()  # Conv1D's [in, out] to nn.Linear's [out, in]
    ours.load_state_dict(state, strict=False)
    return ours, theirs


def test_dropout_is_where_transformers_applies_it():
    ours, theirs = twins()
    ours.train(), theirs.train()
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    written_out = {f"blocks.{i}.attn.hook_pattern": lambda x: None for i in range(2)}  # the pattern as a tensor
    torch.manual_seed(1)
    got = ours(ids, hooks=written_out)
    torch.manual_seed(1)
    expected = theirs(ids).logits
    diff = (got - expected).abs().max().item()
    print(f"\ntrain mode, the same seed: max abs logit difference {diff:.2e}")
    assert diff < 1e-5
    torch.manual_seed(2)
    assert not torch.allclose(ours(ids, hooks=written_out), got)  # it does drop: other seed, other logits
    ours.eval()
    assert torch.equal(ours(ids), ours(ids))


def saved_bytes(fn) -> int:
    """Bytes autograd keeps for the backward pass while fn() runs."""
    total = 0

    def keep(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = fn()
    return total, loss


def test_gradient_checkpointing_gives_the_same_gradients_and_keeps_less():
    model = GPT2(GPT2Config(**{**SHAPE, "n_layer": 4}, **DROPOUT)).train()
    ids = torch.randint(0, 97, (4, 32), generator=torch.Generator().manual_seed(0))
    results = {}
    for checkpointing in (False, True):
        model.gradient_checkpointing = checkpointing
        model.zero_grad()
        torch.manual_seed(3)  # the same dropout masks: checkpoint() replays the RNG when it recomputes
        kept, loss = saved_bytes(lambda: model(ids, labels=ids).loss)
        loss.backward()
        results[checkpointing] = kept, loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}
    (plain_kept, plain_loss, plain), (kept, loss, grads) = results[False], results[True]
    worst = max((grads[n] - plain[n]).abs().max().item() for n in plain)
    print(f"\ncheckpointing: saved {kept / 2**20:.2f} MiB vs {plain_kept / 2**20:.2f} MiB; max grad diff {worst:.1e}")
    assert loss == plain_loss and worst == 0.0
    assert kept < plain_kept / 2


def test_a_steering_vector_trains_through_a_hook():
    """The named points work under autograd: a vector added at one point gets the loss's gradient, and a few
    steps of SGD on it lower the loss while the model's weights stay as they were."""
    model = GPT2(GPT2Config(**SHAPE)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    vector = torch.zeros(32, requires_grad=True)
    hooks = {"blocks.1.hook_resid_pre": lambda x: x + vector}
    optimizer = torch.optim.SGD([vector], lr=1.0)
    losses = []
    for _ in range(5):
        loss = model(ids, hooks=hooks, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"\nsteering vector: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert vector.grad is not None and losses[-1] < losses[0]
