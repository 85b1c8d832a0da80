"""config.json as GPT2Config, refusing in one line what this implementation does not compute."""

from __future__ import annotations

from ..checkpoint import Checkpoint, CheckpointError, first_line
from ..config import GPT2Config
from ..nonlinearities import LEARNED, NONLINEARITIES


def read_config(checkpoint: Checkpoint) -> GPT2Config:
    """The checkpoint's config.json (read once, when it was resolved) as a GPT2Config."""
    why = "a checkpoint needs its config.json next to the weights"
    if checkpoint.weights_file is not None:
        why += ", or a base checkpoint to borrow it from: base=BASE (--base BASE)"
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
    if not isinstance(activation, str) or activation not in NONLINEARITIES:
        why = "has learned parameters that GPT-2's MLP has no place for" if activation in LEARNED else "is unknown"
        raise CheckpointError(f"{path} asks for activation_function={activation!r}, which {why}")
    try:
        return GPT2Config(
            vocab_size=raw["vocab_size"],
            n_positions=raw["n_positions"],
            n_embd=raw["n_embd"],
            n_layer=raw["n_layer"],
            n_head=raw["n_head"],
            n_inner=raw.get("n_inner"),
            layer_norm_epsilon=float(raw.get("layer_norm_epsilon", 1e-5)),
            activation_function=activation,
            eos_token_id=raw.get("eos_token_id"),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
            scale_attn_weights=bool(raw.get("scale_attn_weights", True)),
            scale_attn_by_inverse_layer_idx=bool(raw.get("scale_attn_by_inverse_layer_idx", False)),
            reorder_and_upcast_attn=bool(raw.get("reorder_and_upcast_attn", False)),
            # transformers' defaults when config.json leaves them out
            embd_pdrop=float(raw.get("embd_pdrop", 0.1)),
            attn_pdrop=float(raw.get("attn_pdrop", 0.1)),
            resid_pdrop=float(raw.get("resid_pdrop", 0.1)),
        )
    except KeyError as e:
        raise CheckpointError(f"{path} lacks the field {e.args[0]!r} that a GPT-2 config must have") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has an invalid value: {first_line(e)}") from None
