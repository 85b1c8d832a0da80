"""Taking the residual stream apart: what each embedding, attention layer, head and MLP writes into it,
and how much of a token's logit each one adds directly.

The stream that reaches the final LayerNorm is a sum: token embedding + position embedding + every
block's attention output + every block's MLP output (and each attention output is its heads' results
plus c_proj's bias). The final LayerNorm is linear once its scale is fixed: centre, divide by the
scale of the real run, multiply by ln_f's weight, add its bias. So with the scale frozen, as
TransformerLens's apply_ln_to_stack does, each piece's direct contribution to a logit is a dot product,
and the contributions plus the bias terms add up to the model's own logit.

    decomposition = decompose_resid(model, ids)                       # labels + [K, B, T, C], summing to the stream
    attribution = direct_logit_attribution(model, ids, " Paris", " Rome")   # or token ids
    attribution.contributions                                   # [K, B]: each piece's share of the difference
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .internals import run_with_cache


@dataclass
class Decomposition:
    labels: list[str]  # "embed", "pos_embed", "L3 attn" or "L3H5" and "L3 attn bias", "L3 mlp"
    stack: torch.Tensor  # [K, B, T, C]: the pieces, in the order the forward pass adds them
    scale: torch.Tensor  # [B, T, 1]: the final LayerNorm's scale in the same run, for apply_ln
    logits: torch.Tensor  # [B, T, V]: the same run's logits


@dataclass
class Attribution:
    labels: list[str]
    contributions: torch.Tensor  # [K, B]: each piece's direct contribution to the logit (difference)
    bias: torch.Tensor  # [B]: what the final LayerNorm's bias adds to it
    logit: torch.Tensor  # [B]: the model's own logit (difference), which contributions + bias add up to


def accumulated_resid(model, input_ids: torch.Tensor, **forward_kwargs) -> tuple[list[str], torch.Tensor]:
    """The stream into each block and out of the last: labels and [n_layer + 1, B, T, C]."""
    names = [f"blocks.{i}.hook_resid_pre" for i in range(model.config.n_layer)]
    names.append(f"blocks.{model.config.n_layer - 1}.hook_resid_post")
    _, acts = run_with_cache(model, input_ids, names, **forward_kwargs)
    labels = [f"L{i} resid_pre" for i in range(model.config.n_layer)] + ["final resid_post"]
    return labels, torch.stack([acts[name] for name in names])


def decompose_resid(model, input_ids: torch.Tensor, *, heads: bool = False, **forward_kwargs) -> Decomposition:
    """The pieces that sum to the stream into the final LayerNorm. heads=True splits each attention
    output into its heads' results ("L{i}H{h}") and c_proj's bias ("L{i} attn bias")."""
    L = model.config.n_layer
    attention = "attn.hook_result" if heads else "hook_attn_out"
    names = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"]
    names += [f"blocks.{i}.{point}" for i in range(L) for point in (attention, "hook_mlp_out")]
    logits, acts = run_with_cache(model, input_ids, names, **forward_kwargs)
    token = acts["hook_embed"]
    labels, pieces = ["embed", "pos_embed"], [token, acts["hook_pos_embed"].expand_as(token)]
    for i in range(L):
        if heads:
            result = acts[f"blocks.{i}.attn.hook_result"]  # [B, T, H, C]
            labels += [f"L{i}H{h}" for h in range(result.size(2))] + [f"L{i} attn bias"]
            pieces += [*result.unbind(dim=2), model.h[i].attn.c_proj.bias.detach().expand_as(token)]
        else:
            labels.append(f"L{i} attn")
            pieces.append(acts[f"blocks.{i}.hook_attn_out"])
        labels.append(f"L{i} mlp")
        pieces.append(acts[f"blocks.{i}.hook_mlp_out"])
    return Decomposition(labels, torch.stack(pieces), acts["ln_final.hook_scale"], logits)


def apply_ln(model, stack: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The final LayerNorm applied to each piece of a stack [..., B, T, C] linearly: centred, divided by
    the scale of the real run [B, T, 1], times ln_f's weight. (Its bias belongs to no piece.)"""
    centred = stack - stack.mean(dim=-1, keepdim=True)
    return centred / scale * model.ln_f.weight.detach()


def direct_logit_attribution(
    model, input_ids: torch.Tensor, token, other=None, *, position: int = -1, heads: bool = False, tokenizer=None
) -> Attribution:
    """Each piece's direct contribution to the logit of `token` at `position` (default: the last), or
    to the difference logit(token) - logit(other). Tokens are ids, or texts of one token (with tokenizer=)."""
    token, other = (_token_id(t, tokenizer) for t in (token, other))
    parts = decompose_resid(model, input_ids, heads=heads)
    W_U = model.unembedding.detach()  # [V, C]
    direction = W_U[token] - (W_U[other] if other is not None else 0)  # [C]
    T = input_ids.size(1)
    contributions, bias = logit_contributions(model, parts, [position % T], direction[None])
    logits = parts.logits[:, position]  # [B, V]
    logit = logits[:, token] - (logits[:, other] if other is not None else 0)
    return Attribution(parts.labels, contributions[..., 0], bias.expand(contributions.size(1)), logit)


def logit_contributions(
    model, parts: Decomposition, positions: list[int], directions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each piece's direct contribution along a direction in the unembedding space at each position:
    directions [P, C] (W_U[token], or a difference of two rows) at positions [P] give [K, B, P], and
    the final LayerNorm's bias's share [P]."""
    normalized = apply_ln(model, parts.stack[:, :, positions], parts.scale[:, positions])  # [K, B, P, C]
    return (normalized * directions).sum(dim=-1), directions @ model.ln_f.bias.detach()


def _token_id(token, tokenizer) -> int | None:
    if token is None or isinstance(token, int):
        return token
    if tokenizer is None:
        raise ValueError(f"{token!r} is text: pass tokenizer= to turn it into a token id, or give the id")
    ids = tokenizer.encode(token)
    if len(ids) != 1:
        raise ValueError(f"{token!r} is {len(ids)} tokens, not one: {ids}; attribute one token at a time")
    return ids[0]
