"""Checkpoints that never lose work. Each is a folder OUT/step-NNNNNN in transformers' save_pretrained layout,
so that transformers' from_pretrained and every minigpt2 command load it, with the training state beside it:

    config.json              model_type gpt2, the shape, the special tokens, the dropout fields
    model.safetensors        transformers' names ("transformer." prefix) and Conv1D's [in, out] projections;
                             a head tied to wte is not stored
    generation_config.json   the base checkpoint's, or the special tokens
    tokenizer files          copied from the base checkpoint, or a character vocabulary's tokenizer.json
    training_state.pt        optimizer, step, every RNG, the data position, the run's config: tensors and
                             plain values only, read with torch.load(weights_only=True)

A LoRA run's checkpoint holds its adapter in PEFT's layout (adapter_config.json, adapter_model.safetensors:
lora.py) in place of config.json, model.safetensors and generation_config.json.

A folder is written under a hidden name (.step-NNNNNN.partial) and renamed once complete, so a run killed
mid-save leaves the earlier checkpoints as they were; only then are the oldest beyond `keep` removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..checkpoint import CheckpointError
from ..model import GPT2Config
from .lora import write_adapter

STATE_FILE = "training_state.pt"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json",
)  # fmt: skip
PROJECTIONS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # Conv1D's
_STEP = re.compile(r"step-(\d+)")


def hf_config(config: GPT2Config, base: dict | None, bos_token_id: int | None) -> dict:
    """config.json: the base checkpoint's (so its other fields survive a fine-tune) with this model's shape,
    or, from scratch, what transformers' GPT2Config needs."""
    out = dict(base) if base else {"initializer_range": 0.02}
    out.update(
        model_type="gpt2",
        architectures=["GPT2LMHeadModel"],
        vocab_size=config.vocab_size,
        n_positions=config.n_positions,
        n_ctx=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=config.n_inner,
        activation_function=config.activation_function,
        layer_norm_epsilon=config.layer_norm_epsilon,
        eos_token_id=config.eos_token_id,
        bos_token_id=out.get("bos_token_id", bos_token_id if bos_token_id is not None else config.eos_token_id),
        tie_word_embeddings=config.tie_word_embeddings,
        scale_attn_weights=config.scale_attn_weights,
        scale_attn_by_inverse_layer_idx=config.scale_attn_by_inverse_layer_idx,
        reorder_and_upcast_attn=config.reorder_and_upcast_attn,
        embd_pdrop=config.embd_pdrop,
        attn_pdrop=config.attn_pdrop,
        resid_pdrop=config.resid_pdrop,
    )
    return out


def hf_state_dict(model: torch.nn.Module, weights: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The weights (the model's state_dict(), or the one given: FSDP2's shards gathered) under transformers'
    names and layout: the inverse of loading/weights.py's reading."""
    tied = model.config.tie_word_embeddings
    state = {}
    for name, tensor in (model.state_dict() if weights is None else weights).items():
        if name == "lm_head.weight":
            if not tied:
                state[name] = tensor.detach().contiguous().cpu()
            continue
        tensor = tensor.detach()
        state["transformer." + name] = (tensor.t() if name.endswith(PROJECTIONS) else tensor).contiguous().cpu()
    return state


def save(
    out: Path,
    step: int,
    *,
    model: torch.nn.Module,
    weights: dict[str, torch.Tensor] | None = None,
    adapter_config: dict | None = None,
    config_json: dict,
    generation_json: dict,
    write_tokenizer: Callable[[Path], None],
    state: dict,
    keep: int,
) -> Path:
    """OUT/step-NNNNNN, written whole or not at all; then all but the newest `keep` are removed. adapter_config:
    a LoRA run's, whose adapter stands in for the whole model's files."""
    final = out / f"step-{step:06d}"
    if final.exists():
        raise CheckpointError(f"{final} exists already; a run never writes over a checkpoint")
    for stale in out.glob(".step-*.partial"):  # left by a run killed mid-save
        shutil.rmtree(stale)
    partial = out / f".{final.name}.partial"
    partial.mkdir(parents=True)
    try:
        if adapter_config is None:
            save_file(hf_state_dict(model, weights), str(partial / "model.safetensors"), metadata={"format": "pt"})
            _write_json(partial / "config.json", config_json)
            _write_json(partial / "generation_config.json", generation_json)
        else:
            write_adapter(partial, model, adapter_config, weights)
        write_tokenizer(partial)
        torch.save(state, partial / STATE_FILE)  # last: a folder with the state is complete
        os.rename(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old)
    return final


def copy_tokenizer_files(files: dict[str, Path]) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        for name, path in files.items():
            shutil.copyfile(path, folder / name)

    return write


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def checkpoints(out: Path) -> list[Path]:
    """The complete checkpoints in OUT, oldest step first."""
    found = [p for p in Path(out).glob("step-*") if _STEP.fullmatch(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_STEP.fullmatch(p.name).group(1)))


def find(path) -> Path:
    """The checkpoint a --resume path means: a step folder, or OUT itself for its newest."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    found = checkpoints(path) if path.is_dir() else []
    if not found:
        raise CheckpointError(
            f"{path} is not a checkpoint of minigpt2 train (no {STATE_FILE}); give OUT/step-N that a run wrote, "
            "or OUT itself for its newest"
        )
    return found[-1]


def read_state(folder: Path) -> dict:
    try:
        return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises pickle's, zipfile's and its own errors for a bad file
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{folder / STATE_FILE} is not a readable training state: {why}") from None
