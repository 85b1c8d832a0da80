"""Looking inside the model: named activations, interventions, attention patterns, the logit lens.

Every activation point has a stable name, as in TransformerLens (model.hook_names() lists them):

    hook_embed, hook_pos_embed                      token and position embeddings      [B, T, C]
    blocks.{i}.hook_resid_pre                       the residual stream into block i   [B, T, C]
    blocks.{i}.ln1.hook_normalized                  ln_1's output                      [B, T, C]
    blocks.{i}.attn.hook_q / hook_k / hook_v        queries, keys, values per head     [B, T, H, D]
    blocks.{i}.attn.hook_attn_scores                scaled, masked scores              [B, H, T, S]
    blocks.{i}.attn.hook_pattern                    attention pattern (softmax)        [B, H, T, S]
    blocks.{i}.attn.hook_z                          each head's output                 [B, T, H, D]
    blocks.{i}.hook_attn_out, hook_resid_mid        attention's output, stream after   [B, T, C]
    blocks.{i}.ln2.hook_normalized                  ln_2's output                      [B, T, C]
    blocks.{i}.mlp.hook_pre / hook_post             MLP hidden, before / after GELU    [B, T, mlp_width]
    blocks.{i}.hook_mlp_out, hook_resid_post        MLP's output, stream out of block  [B, T, C]
    ln_final.hook_normalized                        ln_f's output, before the LM head  [B, T, C]

To read activations: `logits, acts = model.run_with_cache(ids, names=...)`. To change one on
the way: `model(ids, hooks={name: fn})` (or run_with_cache(..., hooks=...) to do both), where
fn(x) returns the tensor to use instead, or None to keep x. Example, silencing head 5 of block 3:

    def zero_head_5(z):  # z: [B, T, H, D]
        z = z.clone()
        z[:, :, 5] = 0
        return z

    logits = model(ids, hooks={"blocks.3.attn.hook_z": zero_head_5})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


@torch.no_grad()  # not inference_mode: activations stay ordinary tensors, usable in any later computation
def run_with_cache(
    model,
    input_ids: torch.Tensor,
    names: Iterable[str] | Callable[[str], bool] | None = None,
    *,
    hooks: dict[str, Callable] | None = None,
    **forward_kwargs,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits [B, T, V] and the activations named by `names`: a list of names, a predicate such as
    `lambda name: name.endswith("hook_pattern")`, or None for all of them (which, for a big model
    and a long prompt, is a lot of memory). Nothing is kept that was not asked for.

    hooks: interventions, {name: fn} as for model(ids, hooks=...); what is kept at a changed point
    is the changed value.
    """
    wanted = _select(model.hook_names(), names)
    interventions = hooks or {}
    activations: dict[str, torch.Tensor] = {}

    def change_then_keep(name):
        def hook(x):
            changed = interventions[name](x) if name in interventions else None
            activations[name] = x if changed is None else changed
            return changed

        return hook

    all_hooks = {**interventions, **{name: change_then_keep(name) for name in wanted}}
    logits = model(input_ids, hooks=all_hooks, **forward_kwargs)
    return logits, {name: activations[name] for name in wanted}  # in forward order


def attention_patterns(model, input_ids: torch.Tensor, **forward_kwargs) -> torch.Tensor:
    """Every layer's attention pattern, [n_layer, B, H, query, key]; each row sums to 1."""
    _, acts = run_with_cache(model, input_ids, lambda name: name.endswith("attn.hook_pattern"), **forward_kwargs)
    return torch.stack(list(acts.values()))


def logit_lens(model, input_ids: torch.Tensor, **forward_kwargs) -> torch.Tensor:
    """Next-token probabilities read off the residual stream after each block, [n_layer, B, T, V].

    Each block's output goes through the final LayerNorm and the tied unembedding, as the last
    block's output does to make the logits; so the last entry is softmax(logits).
    """
    _, acts = run_with_cache(model, input_ids, lambda name: name.endswith("hook_resid_post"), **forward_kwargs)
    residuals = torch.stack(list(acts.values()))  # [n_layer, B, T, C]
    with torch.no_grad():
        return model.unembed(model.ln_f(residuals)).softmax(dim=-1)


def _select(all_names: list[str], names) -> list[str]:
    if names is None:
        return all_names
    if callable(names):
        return [name for name in all_names if names(name)]
    names = [names] if isinstance(names, str) else list(names)
    check_names(all_names, names)
    return [name for name in all_names if name in set(names)]


def check_names(all_names: list[str], names: Iterable[str]) -> None:
    """A misspelt name would silently capture or change nothing: refuse it."""
    unknown = sorted(set(names) - set(all_names))
    if unknown:
        raise ValueError(
            f"no activation named {unknown[0]!r}; names look like 'blocks.0.hook_resid_pre' (see model.hook_names())"
        )
