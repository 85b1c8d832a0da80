"""TransformerLens's weight processing, opt-in: GPT2.from_pretrained(name, process=True), or process_weights(model).

IOI-style tutorials and most published GPT-2 circuits read HookedTransformer's processed weights. Each step
leaves what the model predicts unchanged, and moves weight to where it is easier to read:

  fold_ln                 each LayerNorm's weight and bias go into the matrices that read its output (the
                          q/k/v and MLP-in projections, the unembedding), so a LayerNorm only centres and scales;
  center_writing_weights  whatever writes into the residual stream (embeddings, attention and MLP outputs) is
                          made mean-zero over the stream's width, which the next LayerNorm removes anyway;
  center_unembed          the unembedding is made mean-zero over the vocabulary: every logit of a position moves
                          by one constant, so the log-softmax is unchanged;
  fold_value_biases       the value bias goes into the attention output's bias (a pattern's rows sum to 1).

Applied in TransformerLens's order. The LM head is untied from the token embedding and gains a bias
(transformers' GPT-2 has none), since the two no longer agree. The default model is never processed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Processing:
    """Which of TransformerLens's steps to apply (its from_pretrained applies all four)."""

    fold_ln: bool = True
    center_writing_weights: bool = True
    center_unembed: bool = True
    fold_value_biases: bool = True


@torch.no_grad()
def process_weights(model, processing: Processing | None = None, **steps):
    """Apply the steps in place (steps: Processing's fields, each True by default) and return the model."""
    p = dataclasses.replace(processing or Processing(), **steps)
    linears = [m for block in model.h for m in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)]
    if not all(isinstance(m, nn.Linear) for m in [*linears, model.lm_head]):
        raise ValueError("weight processing edits floating-point weights: load the model without quantize=")
    for parameter in model.parameters():  # edited in place: never the checkpoint's own memory-mapped tensors
        parameter.data = parameter.data.clone(memory_format=torch.contiguous_format)
    C = model.config.n_embd
    W_U, b_U = _untied_head(model)  # [V, C], [V]
    for block in model.h:
        attn, mlp = block.attn, block.mlp
        if p.fold_ln:
            _fold_layer_norm(block.ln_1, attn.c_attn)
            _fold_layer_norm(block.ln_2, mlp.c_fc)
        if p.center_writing_weights:
            for writer in (attn.c_proj, mlp.c_proj):
                _centre_over_stream(writer.weight, dim=0)
                _centre_over_stream(writer.bias, dim=0)
        if p.fold_value_biases:
            b_V = attn.c_attn.bias[2 * C :]  # [C]: heads side by side, as c_proj reads them
            attn.c_proj.bias += attn.c_proj.weight @ b_V  # each position's value mix carries b_V once
            b_V.zero_()
            if p.center_writing_weights:
                _centre_over_stream(attn.c_proj.bias, dim=0)
    if p.fold_ln:
        b_U += W_U @ model.ln_f.bias
        W_U *= model.ln_f.weight
        W_U -= W_U.mean(dim=1, keepdim=True)  # as TransformerLens: its input, centred, makes this change nothing
        _reset(model.ln_f)
    if p.center_writing_weights:
        for embedding in (model.wte, model.wpe):
            _centre_over_stream(embedding.weight, dim=1)
    if p.center_unembed:
        W_U -= W_U.mean(dim=0, keepdim=True)
        b_U -= b_U.mean()
    return model


def _untied_head(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Give the model an LM head of its own, with a bias, and return its weight [V, C] and bias [V] to edit."""
    old = model.lm_head
    head = nn.Linear(old.in_features, old.out_features, bias=True, device=old.weight.device, dtype=old.weight.dtype)
    head.weight.copy_(old.weight)
    head.bias.copy_(old.bias if old.bias is not None else torch.zeros_like(head.bias))
    model.lm_head = head
    model.config = dataclasses.replace(model.config, tie_word_embeddings=False)
    return head.weight, head.bias


def _fold_layer_norm(ln: nn.LayerNorm, reader: nn.Linear) -> None:
    """reader(ln(x)) == reader'(ln'(x)) with ln' = centre and scale only: ln's bias goes into the reader's bias,
    its weight into the reader's columns, which are then centred over the stream (ln' output is mean-zero)."""
    reader.bias += reader.weight @ ln.bias
    reader.weight *= ln.weight
    reader.weight -= reader.weight.mean(dim=1, keepdim=True)
    _reset(ln)


def _reset(ln: nn.LayerNorm) -> None:
    ln.weight.fill_(1)
    ln.bias.zero_()


def _centre_over_stream(t: torch.Tensor, dim: int) -> None:
    """Make what a weight writes into the residual stream mean-zero over the stream's width (dimension dim)."""
    t -= t.mean(dim=dim, keepdim=True)
