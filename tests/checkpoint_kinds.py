"""Checkpoints in the layouts people have outside minigpt2's own: transformers' GPT-2 with GPT-2's
vocabulary, nanoGPT's ckpt.pt, and a PEFT LoRA adapter made by peft (tests/loading and the sweep use them)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import TINY_INIT
from transformers import GPT2Config as HFConfig
from transformers import GPT2LMHeadModel

GPT2_VOCAB, NANOGPT_VOCAB = 50257, 50304
SHAPE = dict(n_layer=2, n_head=4, n_embd=32, n_positions=128)  # the tiny checkpoint's context, for parity
LINEARS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TARGETS = ["c_attn", "c_proj", "c_fc"]


def random_gpt2(activation: str, *, zero_biases: bool = False, seed: int = 0) -> GPT2LMHeadModel:
    """transformers' GPT-2 with GPT-2's vocabulary and a wide init (logits of several units)."""
    torch.manual_seed(seed)
    config = HFConfig(vocab_size=GPT2_VOCAB, activation_function=activation, initializer_range=TINY_INIT, **SHAPE)
    model = GPT2LMHeadModel(config).eval()
    if zero_biases:  # what nanoGPT's bias=False computes, in a model that has biases
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.zero_()
            for name, p in model.named_parameters():  # LayerNorms are not all ones either, to be seen
                if ".ln_" in name and name.endswith(".weight"):
                    p.normal_(1.0, 0.2)
    return model


def nanogpt_checkpoint(model: GPT2LMHeadModel, path, *, bias: bool = True):
    """model's weights as nanoGPT's train.py saves them: torch.compile's "_orig_mod." prefix, nn.Linear's
    [out, in], wte padded to 50304 with rows of their own and tied to lm_head, model_args, the optimizer."""
    torch.manual_seed(1)
    c = model.config
    state = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" or (not bias and name.endswith(".bias")):
            continue
        state["_orig_mod." + name] = t.t().contiguous() if name.endswith(LINEARS) else t.clone()
    wte = state["_orig_mod.transformer.wte.weight"]
    wte = torch.cat([wte, torch.randn(NANOGPT_VOCAB - GPT2_VOCAB, c.n_embd) * TINY_INIT])
    state["_orig_mod.transformer.wte.weight"] = state["_orig_mod.lm_head.weight"] = wte  # one tensor, tied
    model_args = dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.n_positions, bias=bias,
                      vocab_size=NANOGPT_VOCAB, dropout=0.0)  # fmt: skip
    optimizer = torch.optim.AdamW([torch.nn.Parameter(wte)]).state_dict()
    torch.save(dict(model=state, optimizer=optimizer, model_args=model_args, iter_num=5000,
                    best_val_loss=torch.tensor(2.85), config={"dataset": "openwebtext", "compile": True}), path)  # fmt: skip
    return path, wte[GPT2_VOCAB:]


def make_adapter(base_path, folder, *, r: int, fan_in_fan_out: bool, seed: int = 0):
    """A LoRA adapter on every c_attn, c_proj and c_fc, its factors random (not PEFT's zero B), saved by peft;
    returns (folder, the PeftModel)."""
    import peft  # a test-only reference: the tests that need it skip without it

    torch.manual_seed(seed)
    base = GPT2LMHeadModel.from_pretrained(base_path).eval()
    config = peft.LoraConfig(r=r, lora_alpha=2 * r + 3, target_modules=TARGETS, fan_in_fan_out=fan_in_fan_out,
                             init_lora_weights=False, lora_dropout=0.0)  # fmt: skip
    with pytest.warns(UserWarning, match="fan_in_fan_out") if not fan_in_fan_out else contextlib.nullcontext():
        model = peft.get_peft_model(base, config).eval()  # peft sets fan_in_fan_out=True for Conv1D itself
    model.save_pretrained(folder)
    return folder, model
