"""A PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors, or .bin), merged into its base's
weights at load, exactly as PEFT's merge: W + scale * B @ A, scale = lora_alpha / r (lora_alpha / sqrt(r)
with use_rslora); or, with merge_lora=False, kept beside them: each adapted projection a LoRALinear
(minigpt2/lora.py) with the base's weight and the adapter's branch, which a hook point sees.

PEFT keeps, for each adapted module, lora_A.weight [r, in] and lora_B.weight [out, r]: nn.Linear's
orientation, whatever the base layer stores. GPT-2's Conv1D stores its weight [in, out], so PEFT adds
(B @ A).T to it (fan_in_fan_out=True, which PEFT sets for Conv1D itself, with a warning, when a config
says False). minigpt2 holds nn.Linear's [out, in], so B @ A is added as it is, under either setting: the
same update PEFT makes. Adapted modules: c_attn, c_proj (attention's and the MLP's) and c_fc.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..checkpoint import ADAPTER_CONFIG, CheckpointError, first_line, read_json
from ..lora import PROJECTIONS, adapt
from .formats import load_pickle

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model.transformer."  # + minigpt2's name: PEFT's saved name of a GPT2LMHeadModel's tensor
# PEFT's saved names: base_model.model.transformer.h.0.attn.c_attn.lora_A.weight (the adapter's name removed).
_FACTOR = re.compile(
    r"(?:base_model\.model\.)?(?:transformer\.)?"  # PEFT's prefix, or the part of it other tools write
    rf"(h\.\d+\.(?:{'|'.join(map(re.escape, PROJECTIONS))}))\.lora_([AB])\.weight"
)
_NOT_READ = ("rank_pattern", "alpha_pattern", "use_dora")  # PEFT options that change the update, refused when set


@dataclass(frozen=True)
class Adapter:
    """An adapter as read: the scale of its update, its dropout (for a run that trains it on), and the
    factors (A [r, in], B [out, r]) of each module it adapts ("h.0.attn.c_attn"), checked against the base."""

    scale: float
    dropout: float
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def merge_into(self, state: dict[str, torch.Tensor]) -> None:
        """Add the update to each weight it adapts, in state ([out, in], minigpt2's names), in place of the
        base's tensor (which may be a mapping of the base's file, so it is never written to)."""
        for module, (A, B) in self.factors.items():
            W = state[module + ".weight"]
            update = (B.to(W.device, torch.float32) @ A.to(W.device, torch.float32)) * self.scale
            state[module + ".weight"] = (W.float() + update).to(W.dtype)

    def keep_in(self, model: nn.Module) -> None:
        """Each projection it adapts, in the loaded model, as a LoRALinear: the base's weight, and this
        adapter's branch in the weight's dtype and on its device."""
        for module, (A, B) in self.factors.items():
            adapted = adapt(model, module, rank=A.shape[0], scale=self.scale, dropout=self.dropout)
            like = {"device": adapted.weight.device, "dtype": adapted.weight.dtype}
            adapted.lora_A.weight = nn.Parameter(A.to(**like).contiguous())
            adapted.lora_B.weight = nn.Parameter(B.to(**like).contiguous())


def read_adapter(folder: Path, state: dict[str, torch.Tensor]) -> Adapter:
    """The adapter of folder, each module's factors checked against the base's weight in state."""
    scale, dropout, found = _read_files(folder)
    where = folder / _adapter_file(folder)
    factors = {}
    for module, pair in found.items():
        if set(pair) != {"A", "B"}:
            raise CheckpointError(f"{where} has lora_{''.join(pair)} of {module} without its other factor")
        A, B, name = pair["A"], pair["B"], module + ".weight"
        W = state.get(name)
        if W is None:
            raise CheckpointError(f"{where} adapts {module}, which the base has not; is the adapter for this base?")
        if A.dim() != 2 or B.dim() != 2 or B.shape[1] != A.shape[0] or (B.shape[0], A.shape[1]) != tuple(W.shape):
            raise CheckpointError(
                f"{where}: {module}'s lora_B {tuple(B.shape)} @ lora_A {tuple(A.shape)} does not fit the base's "
                f"{name} {tuple(W.shape)} (as [out, in]); is the adapter for this base?"
            )
        factors[module] = (A, B)
    return Adapter(scale, dropout, factors)


def _read_files(folder: Path) -> tuple[float, float, dict[str, dict[str, torch.Tensor]]]:
    """The scale, the dropout and, for each adapted module, its factors {"A": ..., "B": ...}."""
    path = folder / ADAPTER_CONFIG
    config = read_json(path, "adapter config")
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise CheckpointError(f"{path} describes a {kind!r} adapter; minigpt2 merges LoRA adapters only")
    refused = [k for k in _NOT_READ if config.get(k)]
    if refused:
        raise CheckpointError(f"{path} sets {', '.join(refused)}, which minigpt2's merge does not compute")
    try:
        r, alpha, dropout = int(config["r"]), float(config["lora_alpha"]), float(config.get("lora_dropout") or 0)
        scale = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
    except KeyError as e:
        raise CheckpointError(f"{path} lacks {e.args[0]!r}, which a LoRA adapter config has") from None
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path} has an invalid r, lora_alpha or lora_dropout: {first_line(e)}") from None
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in _read_tensors(folder).items():
        match = _FACTOR.fullmatch(key)
        if match is None:
            raise CheckpointError(
                f"{folder / _adapter_file(folder)} holds {key}, which is not a LoRA factor of c_attn, c_proj or "
                "c_fc (modules_to_save, trained biases or embeddings); minigpt2 merges those factors only"
            )
        factors.setdefault(match.group(1), {})[match.group(2)] = tensor
    if not factors:
        raise CheckpointError(f"{folder / _adapter_file(folder)} holds no LoRA factors")
    return scale, dropout, factors


def _adapter_file(folder: Path) -> str:
    name = next((n for n in ADAPTER_FILES if (folder / n).is_file()), None)
    if name is None:
        raise CheckpointError(f"{folder} has an {ADAPTER_CONFIG} but none of {', '.join(ADAPTER_FILES)}")
    return name


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / _adapter_file(folder)
    if path.suffix == ".bin":
        state = load_pickle(path)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path} is not a dictionary of tensors")
        return state
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {first_line(e)}") from None
