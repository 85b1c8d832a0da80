"""GPT-2 in plain PyTorch, readable top to bottom.

Shapes in comments use B = batch, T = tokens in this call, S = tokens the keys cover
(cached + new), C = n_embd, H = n_head, D = head_dim = C // H, V = vocab_size.

Parameter names match the official checkpoints (wte, wpe, h.N.attn.c_attn, ...), so a
state dict converts with nothing more than a transpose of the projection weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import generation


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024  # the context: the longest sequence the model can see
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP hidden width; None means 4 * n_embd
    layer_norm_epsilon: float = 1e-5
    gelu_approximate: str = "tanh"  # GPT-2's "gelu_new" is the tanh approximation
    eos_token_id: int | None = 50256

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @classmethod
    def preset(cls, name: str, **overrides) -> GPT2Config:
        """The shape of an official checkpoint, e.g. GPT2Config.preset("gpt2-medium")."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return replace(PRESETS[name], **overrides)


PRESETS = {
    "distilgpt2": GPT2Config(n_layer=6, n_embd=768, n_head=12),
    "gpt2": GPT2Config(n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium": GPT2Config(n_layer=24, n_embd=1024, n_head=16),
    "gpt2-large": GPT2Config(n_layer=36, n_embd=1280, n_head=20),
    "gpt2-xl": GPT2Config(n_layer=48, n_embd=1600, n_head=25),
}


class KVCache:
    """Keys and values of every layer, preallocated for `max_len` tokens and filled in place.

    `length` counts the tokens already stored; the next call writes at that position.
    """

    def __init__(self, config: GPT2Config, batch_size: int, max_len: int, *, device=None, dtype=None):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys.size(3)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k and v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x, cache: tuple[torch.Tensor, torch.Tensor] | None, start: int):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # each [B, T, C]
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        if cache is not None:
            # Write this call's keys and values at their positions, then attend over all so far.
            cached_keys, cached_values = cache  # [B, H, max_len, D]
            cached_keys[:, :, start : start + T] = k
            cached_values[:, :, start : start + T] = v
            k, v = cached_keys[:, :, : start + T], cached_values[:, :, : start + T]  # [B, H, S, D]
        y = F.scaled_dot_product_attention(q, k, v, **_causal_mask(T, start, x.device))  # [B, H, T, D]
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.c_proj(y)


def _causal_mask(T: int, start: int, device) -> dict:
    """scaled_dot_product_attention's arguments that let T queries at positions start..start+T-1
    see the keys at positions 0..start+T-1 up to their own position and no further."""
    if T == 1:
        return {}  # a single newest token may see every key
    if start == 0:
        return {"is_causal": True}  # square: the fast built-in mask
    # Query i sits at position start + i and sees keys up to and including that position.
    return {"attn_mask": torch.ones(T, start + T, dtype=torch.bool, device=device).tril(start)}


class MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_width)
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd)
        self.gelu_approximate = config.gelu_approximate

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.gelu_approximate))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, start: int = 0):
        x = x + self.attn(self.ln_1(x), cache, start)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT2(nn.Module):
    """Embeddings, n_layer blocks, a final LayerNorm, and an LM head tied to the token embedding."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding, also the LM head
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)  # learned position embedding
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        if not self.wte.weight.is_meta:  # on the meta device (loading) there is nothing to fill
            self.apply(self._init_weights)

    def _init_weights(self, module):
        """GPT-2's initialisation, for a model built from a config rather than loaded."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
        # Residual projections get a smaller std so the residual stream does not grow with depth.
        if isinstance(module, (CausalSelfAttention, MLP)):
            nn.init.normal_(module.c_proj.weight, std=0.02 / math.sqrt(2 * self.config.n_layer))

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device=None, dtype=None, revision: str | None = None) -> GPT2:
        """Load an official checkpoint by name ("gpt2-medium"), a hub repo ("org/name"), or a local path."""
        from .checkpoint import load_model  # here, not at the top: checkpoint.py imports this module

        return load_model(name_or_path, device=device, dtype=dtype, revision=revision)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits [B, T, V] for input_ids [B, T].

        With a cache, input_ids continue the tokens already in it, and their keys and values are
        stored for the next call.
        """
        T = input_ids.size(1)
        start = cache.length if cache is not None else 0
        if start + T > self.config.n_positions:
            raise ValueError(f"sequence of {start + T} tokens is longer than the context ({self.config.n_positions})")
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"sequence of {start + T} tokens does not fit the cache ({cache.max_len} tokens)")
        positions = torch.arange(start, start + T, device=input_ids.device)  # [T]
        x = self.wte(input_ids) + self.wpe(positions)  # [B, T, C]
        for i, block in enumerate(self.h):
            layer_cache = (cache.keys[i], cache.values[i]) if cache is not None else None
            x = block(x, layer_cache, start)
        if cache is not None:
            cache.length = start + T
        x = self.ln_f(x)
        return F.linear(x, self.wte.weight)  # [B, T, V]: the LM head is tied to the token embedding

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for this model, on its device and in its dtype."""
        w = self.wte.weight
        return KVCache(self.config, batch_size, max_len or self.config.n_positions, device=w.device, dtype=w.dtype)

    # model.generate(input_ids, max_new_tokens=...): the loop in minigpt2/generation.py.
    generate = generation.generate

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
