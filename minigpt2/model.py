"""GPT-2 in plain PyTorch, readable top to bottom.

Shapes in comments use B = batch, T = tokens in this call, S = tokens the keys cover
(cached + new), C = n_embd, H = n_head, D = head_dim = C // H, V = vocab_size.

Parameter names match the official checkpoints (wte, wpe, h.N.attn.c_attn, ...), so a
state dict converts with nothing more than a transpose of the projection weights.
Every activation passes a named point (hooks.py) where a caller may read or replace it.

GPT2 is composed as transformers composes GPT2LMHeadModel: this file is the network, and each wing
adds its front doors through a mixin, so that help(GPT2) and an editor find every method:
from_pretrained (loading/), generate and stream (generation/), run_with_cache, attention_patterns and
logit_lens (interp/), score (scoring.py). The wings never import this file: data flows one way.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from .cache import KVCache
from .config import PRESETS, GPT2Config
from .generation.mixin import GenerationMixin
from .hooks import Hook, Recorder, check_names
from .interp.mixin import InterpretabilityMixin
from .loading.pretrained import PretrainedMixin
from .lora import PROJECTIONS, LoRALinear, adapt, is_lora_point, project
from .mask import Mask
from .nonlinearities import NONLINEARITIES
from .scoring import ScoringMixin

__all__ = ["GPT2", "GPT2Config", "PRESETS", "ForwardOutput"]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config, layer: int):
        super().__init__()
        self.layer, self.n_head = layer, config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k and v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.hook_prefix = f"blocks.{layer}.attn."
        # Scores are q.k / sqrt(head_dim), the softmax's usual temperature; two config variants change it.
        self.scale = config.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= layer + 1
        self.upcast = config.reorder_and_upcast_attn
        self.attn_dropout = nn.Dropout(config.attn_pdrop)  # on the pattern, when written out
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, mask: Mask, cache: KVCache | None, hook: Hook):
        B, T, C = x.shape
        H, D, p = self.n_head, C // self.n_head, self.hook_prefix
        q, k, v = project(self.c_attn, x, hook).view(B, T, 3, H, D).unbind(2)  # each [B, T, H, D]
        q, k, v = hook(p + "hook_q", q), hook(p + "hook_k", k), hook(p + "hook_v", v)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        if cache is not None:
            k, v = cache.write(self.layer, k, v)  # [B, H, S, D]: the keys and values of every token so far
        upcast = self.upcast and q.dtype != torch.float32
        if upcast or hook.wants(p + "hook_attn_scores", p + "hook_pattern"):
            y = self._attention_written_out(q, k, v, mask, hook, upcast)
        else:
            dropout = self.attn_dropout.p if self.training else 0.0
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask.keys_visible, is_causal=mask.is_causal, scale=self.scale, dropout_p=dropout
            )
        z = hook(p + "hook_z", y.transpose(1, 2))  # [B, T, H, D]: each head's output
        if hook.wants(p + "hook_result"):  # each head's share of the output, written out only when asked for
            # [C, H, D]: the slice of c_proj that reads each head (int8's weight reads back in fp32)
            W_O = self.c_proj.weight.view(C, H, D).to(z.dtype)
            result = hook(p + "hook_result", torch.einsum("bthd,chd->bthc", z, W_O))  # [B, T, H, C]
            out = result.sum(dim=2) + self.c_proj.bias
            if isinstance(self.c_proj, LoRALinear):  # an adapter's share is no one head's: added whole
                out = out + self.c_proj.branch(z.reshape(B, T, C), hook)
            return self.resid_dropout(out)
        return self.resid_dropout(project(self.c_proj, z.reshape(B, T, C), hook))  # heads side by side, then mixed

    def _attention_written_out(self, q, k, v, mask: Mask, hook: Hook, upcast: bool):
        """What scaled_dot_product_attention computes, step by step, so the pattern can be seen.
        upcast: scores and softmax in fp32 (reorder_and_upcast_attn), back to v's dtype to mix the values."""
        if upcast:
            q, k = q.float(), k.float()
        scores = (q @ k.transpose(-2, -1)) * self.scale  # [B, H, T, S]
        scores = scores.masked_fill(~mask.full(q.size(2), k.size(2), q.device), float("-inf"))
        scores = hook(self.hook_prefix + "hook_attn_scores", scores)
        pattern = hook(self.hook_prefix + "hook_pattern", scores.softmax(dim=-1))  # [B, H, T, S], rows sum to 1
        return self.attn_dropout(pattern).to(v.dtype) @ v  # [B, H, T, D]


class MLP(nn.Module):
    def __init__(self, config: GPT2Config, layer: int):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_width)
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd)
        self.act = NONLINEARITIES[config.activation_function]  # GPT-2's: GELU, tanh approximation
        self.dropout = nn.Dropout(config.resid_pdrop)
        self.hook_prefix = f"blocks.{layer}.mlp."

    def forward(self, x, hook: Hook):
        pre = hook(self.hook_prefix + "hook_pre", project(self.c_fc, x, hook))  # [B, T, mlp_width]
        post = hook(self.hook_prefix + "hook_post", self.act(pre))
        return self.dropout(project(self.c_proj, post, hook))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config, layer: int):
        super().__init__()
        self.hook_prefix = f"blocks.{layer}."
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config, layer)

    def forward(self, x, mask: Mask, cache: KVCache | None, hook: Hook):
        p = self.hook_prefix
        x = hook(p + "hook_resid_pre", x)  # [B, T, C]: the residual stream coming in
        attn_out = self.attn(layer_norm(self.ln_1, x, hook, p + "ln1."), mask, cache, hook)
        x = hook(p + "hook_resid_mid", x + hook(p + "hook_attn_out", attn_out))
        mlp_out = self.mlp(layer_norm(self.ln_2, x, hook, p + "ln2."), hook)
        return hook(p + "hook_resid_post", x + hook(p + "hook_mlp_out", mlp_out))


def layer_norm(ln: nn.LayerNorm, x: torch.Tensor, hook: Hook, prefix: str) -> torch.Tensor:
    """ln(x) with its named points: prefix + "hook_scale", the divisor sqrt(var + eps) [B, T, 1], worked
    out only when asked for; prefix + "hook_normalized", the output. A scale replaced by a hook (frozen,
    say) is the one the output is divided by."""
    if hook.wants(prefix + "hook_scale"):
        centred = x - x.mean(dim=-1, keepdim=True)
        scale = (centred.pow(2).mean(dim=-1, keepdim=True) + ln.eps).sqrt()
        given = hook(prefix + "hook_scale", scale)
        if given is not scale:
            return hook(prefix + "hook_normalized", centred / given * ln.weight + ln.bias)
    return hook(prefix + "hook_normalized", ln(x))


class ForwardOutput(NamedTuple):
    """model(ids, labels=...): the loss beside the logits, in transformers' order (loss, logits = ...)."""

    loss: torch.Tensor
    logits: torch.Tensor


class GPT2(PretrainedMixin, GenerationMixin, InterpretabilityMixin, ScoringMixin, nn.Module):
    """Embeddings, n_layer blocks, a final LayerNorm, and an LM head (tied to the token embedding, as a rule).
    The mixins add the wings' front doors (see the top of this file)."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        # Token embedding and learned position embedding. Given as empty tensors because nn.Embedding's
        # own init, run on the meta device while loading, costs a second.
        self.wte = nn.Embedding(config.vocab_size, config.n_embd, _weight=torch.empty(config.vocab_size, config.n_embd))
        self.wpe = nn.Embedding(
            config.n_positions, config.n_embd, _weight=torch.empty(config.n_positions, config.n_embd)
        )
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        # True: under model.train(), each block's activations are recomputed in the backward pass instead of
        # kept (less memory, one more forward; the same gradients). Hooks in a block then run twice.
        self.gradient_checkpointing = False
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        tied = config.tie_word_embeddings  # a tied head is wte itself: no weight of its own to make
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False, device="meta" if tied else None)
        self.tie_weights()
        # What generate() uses for the options a caller leaves out, as transformers' generation_config: the
        # checkpoint's generation_config.json, or else its config.json's special tokens (set by loading/).
        self.generation_defaults: dict = {} if config.eos_token_id is None else {"eos_token_id": config.eos_token_id}
        self.generation_defaults_source = "the model's config"
        if not self.wte.weight.is_meta:  # on the meta device (loading) there is nothing to fill
            self.apply(self._init_weights)

    def tie_weights(self) -> None:
        """The LM head reads the token embedding (unless the config unties them); again after loading. A head
        swapped for int8 keeps its own copy, quantized from wte."""
        if self.config.tie_word_embeddings and isinstance(self.lm_head, nn.Linear):
            self.lm_head.weight = self.wte.weight

    def _init_weights(self, module):
        """GPT-2's initialisation, for a model built from a config rather than loaded."""
        tied_head = module is self.lm_head and self.config.tie_word_embeddings  # wte, initialised as such
        if isinstance(module, (nn.Linear, nn.Embedding)) and not tied_head:
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        # Residual projections get a smaller std so the residual stream does not grow with depth.
        if isinstance(module, (CausalSelfAttention, MLP)):
            nn.init.normal_(module.c_proj.weight, std=0.02 / math.sqrt(2 * self.config.n_layer))

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        hooks: dict[str, Callable] | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor | ForwardOutput:
        """Logits [B, T, V] for input_ids [B, T].

        cache: input_ids continue the tokens already in it; their keys and values are stored for the next call.
        attention_mask [B, S]: 1 for real tokens, 0 for padding, over the cached and the new tokens (as in
            transformers). Positions count real tokens only, so a left-padded prompt gets the positions it has alone.
        hooks: {name: fn} to read or replace activations on the way: fn(x) or fn(x, hook) (names: hook_names();
            see minigpt2/interp/internals.py and hooks.py).
        labels [B, T]: return ForwardOutput(loss, logits) instead, the loss as transformers computes it: each position
            predicts the next label, -100 is not counted, the mean over the counted ones, in fp32.
        """
        B, T = input_ids.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.n_positions:
            raise ValueError(f"sequence of {start + T} tokens is longer than the context ({self.config.n_positions})")
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"sequence of {start + T} tokens does not fit the cache ({cache.max_len} tokens)")
        if attention_mask is not None and attention_mask.shape != (B, start + T):
            raise ValueError(
                f"attention_mask must have shape [batch, cached + new tokens] = [{B}, {start + T}], "
                f"got {list(attention_mask.shape)}"
            )
        device = input_ids.device
        if attention_mask is None:
            positions = torch.arange(start, start + T, device=device)  # [T]
        else:  # the number of real tokens before each one; padding gets 0 (its output is never used)
            positions = (attention_mask.long().cumsum(-1)[:, start:] - 1).clamp(min=0)  # [B, T]
        if hooks:
            check_names(self.hook_names(), hooks)
        hook = Hook(hooks, start=start, tokens=T)
        mask = Mask.for_call(T, start, attention_mask, device)
        if cache is not None:
            cache.reserve(T)
        logits = self.compute_logits(input_ids, positions, mask, cache, hook)
        if labels is None:
            return logits
        if labels.shape != (B, T):
            raise ValueError(f"labels must have input_ids' shape {[B, T]}, got {list(labels.shape)}")
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return ForwardOutput(loss, logits)

    def compute_logits(self, input_ids, positions, mask: Mask, cache: KVCache | None, hook: Hook) -> torch.Tensor:
        """The model itself: embeddings, blocks, final LayerNorm, LM head. Logits [B, T, V]."""
        token_embed = hook("hook_embed", self.wte(input_ids))  # [B, T, C]
        x = self.drop(token_embed + hook("hook_pos_embed", self.wpe(positions).expand_as(token_embed)))
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.h:
            if recompute:  # keep only each block's input; its activations are worked out again for the backward
                x = torch.utils.checkpoint.checkpoint(block, x, mask, cache, hook, use_reentrant=False)
            else:
                x = block(x, mask, cache, hook)
        return self.lm_head(layer_norm(self.ln_f, x, hook, "ln_final."))

    @property
    def unembedding(self) -> torch.Tensor:
        """The LM head's weight [V, C]: the token embedding, unless the config unties the two; in the
        model's dtype (int8's weight reads back in fp32)."""
        return self.lm_head.weight.to(self.wte.weight.dtype)

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the final normalised stream."""
        return self.lm_head(x)

    def hook_names(self) -> list[str]:
        """Every named activation point, in the order the forward pass reaches them; a LoRA branch's (lora.py)
        where this model keeps one."""
        adapted = {module.hook_name for module in self.modules() if isinstance(module, LoRALinear)}
        return [name for name in _hook_names(self.config.n_layer) if name in adapted or not is_lora_point(name)]

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for this model, on its device and in its dtype."""
        w = self.wte.weight
        return KVCache(self.config, batch_size, max_len or self.config.n_positions, device=w.device, dtype=w.dtype)

    def num_params(self) -> int:
        """Parameters, each counted once: a head tied to the token embedding is wte, even stored as a copy."""
        own_head = {id(p) for p in self.lm_head.parameters()} - {id(self.wte.weight)}
        skip = own_head if self.config.tie_word_embeddings else set()
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)


@functools.cache
def _hook_names(n_layer: int) -> list[str]:
    """The points a forward pass reaches, every optional one included (a LoRA branch on each projection too),
    recorded from a one-block model on the meta device (no memory, no arithmetic); block 0's points stand for
    every block's."""
    with torch.device("meta"):
        one_block = GPT2(GPT2Config(vocab_size=2, n_positions=2, n_embd=2, n_layer=1, n_head=1))
        for projection in PROJECTIONS:
            adapt(one_block, "h.0." + projection, rank=1, scale=1.0, dropout=0.0)
        recorder = Recorder()
        one_block.compute_logits(
            torch.zeros(1, 2, dtype=torch.long), torch.arange(2), Mask(is_causal=True), None, recorder
        )
    block = [name for name in recorder.names if name.startswith("blocks.0.")]
    outside = [name for name in recorder.names if not name.startswith("blocks.0.")]
    before = outside[: recorder.names.index(block[0])]  # the embeddings, then the blocks, then ln_final
    each_block = [name.replace("blocks.0.", f"blocks.{i}.", 1) for i in range(n_layer) for name in block]
    return [*before, *each_block, *outside[len(before) :]]
