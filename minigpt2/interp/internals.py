"""Looking inside the model: named activations, interventions, attention patterns, the logit lens.

Every activation point has a stable name, as in TransformerLens (model.hook_names() lists them):

    hook_embed, hook_pos_embed                      token and position embeddings      [B, T, C]
    blocks.{i}.hook_resid_pre                       the residual stream into block i   [B, T, C]
    blocks.{i}.ln1.hook_scale                       ln_1's divisor, sqrt(var + eps)    [B, T, 1]
    blocks.{i}.ln1.hook_normalized                  ln_1's output                      [B, T, C]
    blocks.{i}.attn.hook_q / hook_k / hook_v        queries, keys, values per head     [B, T, H, D]
    blocks.{i}.attn.hook_attn_scores                scaled, masked scores              [B, H, T, S]
    blocks.{i}.attn.hook_pattern                    attention pattern (softmax)        [B, H, T, S]
    blocks.{i}.attn.hook_z                          each head's output                 [B, T, H, D]
    blocks.{i}.attn.hook_result                     each head's share of attn_out      [B, T, H, C]
    blocks.{i}.hook_attn_out, hook_resid_mid        attention's output, stream after   [B, T, C]
    blocks.{i}.ln2.hook_scale, ln2.hook_normalized  ln_2's divisor and output          [B, T, 1], [B, T, C]
    blocks.{i}.mlp.hook_pre / hook_post             MLP hidden, before / after GELU    [B, T, mlp_width]
    blocks.{i}.hook_mlp_out, hook_resid_post        MLP's output, stream out of block  [B, T, C]
    blocks.{i}.attn.hook_lora_c_attn (c_proj; mlp.  a LoRA adapter's added output,    [B, T, out]
      hook_lora_c_fc, c_proj)                       kept separate (minigpt2/lora.py)
    ln_final.hook_scale, ln_final.hook_normalized   ln_f's divisor, and its output     [B, T, 1], [B, T, C]

The scales and the heads' results are worked out only when asked for (a head's result is its z
through its slice of c_proj; attn_out is then their sum plus c_proj's bias, and c_proj's LoRA branch,
when it has one).

To read activations: `logits, acts = model.run_with_cache(ids, names=...)`; with
grad_of=metric, each one's gradient of the metric comes back as well (name + "_grad"). To change
one on the way: `model(ids, hooks={name: fn})` (or run_with_cache(..., hooks=...) to do both),
where fn(x) (or fn(x, hook), as TransformerLens writes hooks: hooks.py) returns the tensor to use
instead, or None to keep x. Example, silencing head 5 of block 3:

    def zero_head_5(z):  # z: [B, T, H, D]
        z = z.clone()
        z[:, :, 5] = 0
        return z

    logits = model(ids, hooks={"blocks.3.attn.hook_z": zero_head_5})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..hooks import check_names, with_point


def run_with_cache(
    model,
    input_ids: torch.Tensor,
    names: Iterable[str] | Callable[[str], bool] | None = None,
    *,
    hooks: dict[str, Callable] | None = None,
    grad_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
    backward_hooks: dict[str, Callable] | None = None,
    **forward_kwargs,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits [B, T, V] and the activations named by `names`: a list of names, a predicate such as
    `lambda name: name.endswith("hook_pattern")`, or None for all of them (which, for a big model
    and a long prompt, is a lot of memory). Nothing is kept that was not asked for.

    hooks: interventions, {name: fn} as for model(ids, hooks=...); what is kept at a changed point
    is the changed value.
    grad_of: a scalar metric of the logits, e.g. `lambda logits: logits[0, -1, 42]`; each named
    activation's gradient of it comes back too, under name + "_grad" (as TransformerLens names them).
    The parameters' .grad are left alone. backward_hooks: {name: fn(grad)} called with the gradient
    arriving at that point; fn may return a gradient to pass on instead (needs grad_of).
    """
    if backward_hooks and grad_of is None:
        raise ValueError("backward_hooks run during the backward pass: give grad_of= as well")
    wanted = _select(model.hook_names(), names)
    check_names(model.hook_names(), backward_hooks or {})
    interventions = {name: with_point(fn) for name, fn in (hooks or {}).items()}
    activations: dict[str, torch.Tensor] = {}

    def change_then_keep(name):
        def hook(x, point):
            changed = interventions[name](x, point) if name in interventions else None
            kept = x if changed is None else changed
            if name in wanted:
                activations[name] = kept
            if backward_hooks and name in backward_hooks and kept.requires_grad:
                kept.register_hook(backward_hooks[name])
            return changed

        return hook

    points = {*interventions, *wanted, *(backward_hooks or {})}
    # Without grad_of, no graph: activations stay ordinary tensors (not inference tensors), usable anywhere.
    with torch.set_grad_enabled(grad_of is not None):
        logits = model(input_ids, hooks={name: change_then_keep(name) for name in points}, **forward_kwargs)
        if grad_of is None:
            return logits, {name: activations[name] for name in wanted}  # in forward order
        metric = grad_of(logits)
        if metric.numel() != 1:
            raise ValueError(f"grad_of must give a single number (a scalar metric), got shape {list(metric.shape)}")
        kept = [name for name in wanted if activations[name].requires_grad]
        grads = torch.autograd.grad(metric, [activations[name] for name in kept], allow_unused=True)
    cache = {name: activations[name].detach() for name in wanted}
    for name, grad in zip(kept, grads, strict=True):
        cache[name + "_grad"] = grad if grad is not None else torch.zeros_like(cache[name])
    return logits.detach(), cache


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
