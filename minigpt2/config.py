"""GPT2Config: a GPT-2's shape and the variants transformers computes, and the official checkpoints' shapes
(PRESETS). The bottom of the house: the model, the loader and the trainer all read it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .nonlinearities import NONLINEARITIES


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024  # the context: the longest sequence the model can see
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP hidden width; None means 4 * n_embd
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu_new"  # the MLP's nonlinearity: a name in minigpt2/nonlinearities.py
    eos_token_id: int | None = 50256
    # Variants of GPT-2 that transformers computes too (the official checkpoints use the defaults):
    tie_word_embeddings: bool = True  # False: a separate lm_head.weight instead of wte
    scale_attn_weights: bool = True  # False: attention scores are not divided by sqrt(head_dim)
    scale_attn_by_inverse_layer_idx: bool = False  # True: block i also divides them by i + 1 (stanford-crfm)
    reorder_and_upcast_attn: bool = False  # True: scores and softmax in fp32 even when the weights are half
    # Dropout under model.train(), where transformers applies it: after the embeddings, on the attention
    # pattern, after each residual branch. 0 for a model built from a config, as nanoGPT's default; a
    # checkpoint's config.json gives its own (0.1 for the official ones). model.eval() never drops.
    embd_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    resid_pdrop: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner"):
            value = getattr(self, name)
            if not (name == "n_inner" and value is None) and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if not (isinstance(self.layer_norm_epsilon, float) and 0 < self.layer_norm_epsilon < 1):
            raise ValueError(f"layer_norm_epsilon must be a number in (0, 1), got {self.layer_norm_epsilon!r}")
        if self.eos_token_id is not None and (type(self.eos_token_id) is not int or self.eos_token_id < 0):
            raise ValueError(f"eos_token_id must be a token id or None, got {self.eos_token_id!r}")
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.activation_function not in NONLINEARITIES:
            raise ValueError(
                f"unknown activation_function {self.activation_function!r}; choose one of {', '.join(NONLINEARITIES)}"
            )

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
