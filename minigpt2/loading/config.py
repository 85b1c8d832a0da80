"""config.json as GPT2Config, refusing in one line what this implementation does not compute; and the
generation defaults, from generation_config.json (or config.json), as transformers reads them."""

from __future__ import annotations

import dataclasses
import warnings

from ..activations import ACTIVATIONS, LEARNED
from ..checkpoint import Checkpoint, CheckpointError, first_line
from ..generation.config import GenerationConfig
from ..model import GPT2Config

GENERATION_FIELDS = {f.name for f in dataclasses.fields(GenerationConfig)}
# Fields of transformers' GenerationConfig that change what it generates and minigpt2 does not compute:
# set to anything but their neutral value, they are named in a warning rather than silently dropped.
NOT_COMPUTED = (
    "typical_p", "epsilon_cutoff", "eta_cutoff", "min_p", "top_h", "num_beam_groups", "diversity_penalty",
    "penalty_alpha", "suppress_tokens", "begin_suppress_tokens", "sequence_bias", "renormalize_logits",
    "exponential_decay_length_penalty", "encoder_repetition_penalty", "guidance_scale", "forced_bos_token_id",
    "force_words_ids", "constraints", "dola_layers", "watermarking_config",
)  # fmt: skip
NEUTRAL = (None, False, 0, 0.0, 1, 1.0, [], {})


def read_config(checkpoint: Checkpoint) -> GPT2Config:
    """The checkpoint's config.json (read once, when it was resolved) as a GPT2Config."""
    why = "a checkpoint needs its config.json next to the weights"
    if checkpoint.weights_file is not None:
        why += ", or a base checkpoint to borrow it from: config=BASE (--config BASE)"
    path = checkpoint.require("config.json", why)
    raw = checkpoint.config
    if not isinstance(raw, dict) or raw.get("model_type") != "gpt2":
        kind = raw.get("model_type") if isinstance(raw, dict) else None
        raise CheckpointError(
            f"{path} describes a {kind!r} model, not GPT-2 (model_type 'gpt2'); minigpt2 loads GPT-2 only"
        )
    if raw.get("add_cross_attention"):
        raise CheckpointError(
            f"{path} asks for cross-attention (add_cross_attention), the decoder half of an encoder-decoder; "
            "minigpt2 runs GPT-2 language models only"
        )
    activation = raw.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        why = "has learned parameters that GPT-2's MLP has no place for" if activation in LEARNED else "is unknown"
        raise CheckpointError(f"{path} asks for activation_function={activation!r}, which {why}")
    try:
        return GPT2Config(
            vocab_size=int(raw["vocab_size"]),
            n_positions=int(raw["n_positions"]),
            n_embd=int(raw["n_embd"]),
            n_layer=int(raw["n_layer"]),
            n_head=int(raw["n_head"]),
            n_inner=raw.get("n_inner"),
            layer_norm_epsilon=float(raw.get("layer_norm_epsilon", 1e-5)),
            activation_function=activation,
            eos_token_id=raw.get("eos_token_id"),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
            scale_attn_weights=bool(raw.get("scale_attn_weights", True)),
            scale_attn_by_inverse_layer_idx=bool(raw.get("scale_attn_by_inverse_layer_idx", False)),
            reorder_and_upcast_attn=bool(raw.get("reorder_and_upcast_attn", False)),
        )
    except KeyError as e:
        raise CheckpointError(f"{path} lacks the field {e.args[0]!r} that a GPT-2 config must have") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has an invalid value: {first_line(e)}") from None


def read_generation_defaults(checkpoint: Checkpoint) -> tuple[dict, str]:
    """The checkpoint's generation defaults and where they come from, with transformers' rules: its
    generation_config.json when it has one (and then nothing from config.json), else config.json's special
    tokens (and any generation field written there, as older checkpoints did). Unknown fields are ignored;
    a bad value in a known one is a one-line error naming the file and the field."""
    path = checkpoint.path("generation_config.json")
    raw = checkpoint.read_json("generation_config.json") if path is not None else checkpoint.config
    source = str(path) if path is not None else "config.json"
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source} is not a JSON object of generation settings")
    defaults = {k: v for k, v in raw.items() if k in GENERATION_FIELDS and v is not None}
    if "max_new_tokens" in defaults:
        defaults.pop("max_length", None)  # as transformers: max_new_tokens wins
    if path is not None:
        ignored = [k for k in NOT_COMPUTED if raw.get(k) not in NEUTRAL]
        if ignored:
            warnings.warn(f"{source} sets {', '.join(ignored)}, which minigpt2 does not compute; they are ignored")
    try:
        GenerationConfig(**defaults)
    except ValueError as e:
        raise CheckpointError(f"{source}: {first_line(e)}") from None
    return defaults, source
