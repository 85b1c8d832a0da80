"""LoRA runs: TrainConfig(lora="r=8,alpha=16,targets=c_attn,c_proj,c_fc"), --lora. Every base weight is frozen,
and only the adapters train: a LoRALinear (minigpt2/lora.py) around each target projection of every block.
A checkpoint holds the adapter in PEFT's layout, which PeftModel and minigpt2 load over the base:

    adapter_config.json          peft_type LORA, base_model_name_or_path, r, lora_alpha, lora_dropout,
                                 target_modules, fan_in_fan_out true (GPT-2's Conv1D), ...
    adapter_model.safetensors    base_model.model.transformer.h.N.attn.c_attn.lora_A.weight [r, in] and
                                 lora_B.weight [out, r], for each adapted projection

A resumed run loads its adapter kept separate (merge_lora=False), over the base it names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch
from safetensors.torch import save_file

from ..checkpoint import ADAPTER_CONFIG, Checkpoint, CheckpointError
from ..loading.lora import ADAPTER_FILES, PEFT_PREFIX
from ..lora import PROJECTIONS, adapt, adapters

KEYS = ("r", "alpha", "targets", "dropout")
TARGETS = ("c_attn", "c_proj", "c_fc")  # as PEFT matches names: c_proj is attention's and the MLP's
EXAMPLE = "r=8,alpha=16,targets=c_attn,c_proj,c_fc,dropout=0.05"


@dataclass(frozen=True)
class LoraSpec:
    """The adapters of a run: rank r, lora_alpha (the update is scaled by alpha / r), the projections they
    adapt in every block, and the dropout on their input."""

    r: int
    alpha: float
    targets: tuple[str, ...]
    dropout: float

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """From "r=8,alpha=16,targets=c_attn,c_proj,c_fc,dropout=0.05": key=value parts, the targets' names
        running on after their commas. Left out: r 8, alpha 2r, targets c_attn, dropout 0 ("": all four)."""
        given: dict[str, list[str]] = {}
        key = None
        for part in text.split(",") if text.strip() else []:
            name, is_pair, value = (s.strip() for s in part.partition("="))
            if is_pair:
                if name not in KEYS:
                    _bad(text, f"unknown key {name!r}; the keys are {', '.join(KEYS)}")
                if name in given:
                    _bad(text, f"{name} is given twice")
                key, given[name] = name, [value]
            elif key == "targets" and name:
                given["targets"].append(name)
            else:
                _bad(text, f"{part.strip()!r} is not key=value, as in {EXAMPLE}")
        r = _number(text, given, "r", int, 8)
        if r < 1:
            _bad(text, f"r must be a positive integer, got {r}")
        alpha = _number(text, given, "alpha", float, 2.0 * r)
        if alpha <= 0:
            _bad(text, f"alpha must be positive, got {alpha:g}")
        dropout = _number(text, given, "dropout", float, 0.0)
        if not 0 <= dropout < 1:
            _bad(text, f"dropout must be at least 0 and below 1, got {dropout:g}")
        targets = tuple(dict.fromkeys(given.get("targets", ["c_attn"])))
        unknown = [t for t in targets if t not in TARGETS]
        if unknown or not all(targets):
            _bad(text, f"target {unknown[0] if unknown else ''!r} is not one of {', '.join(TARGETS)}")
        return cls(r, alpha, targets, dropout)

    @property
    def scale(self) -> float:
        return self.alpha / self.r  # as loading/lora.py reads it back: lora_alpha / r

    def __str__(self) -> str:
        return f"r={self.r},alpha={self.alpha:g},targets={','.join(self.targets)},dropout={self.dropout:g}"

    def adapter_config(self, base: str) -> dict:
        """adapter_config.json, with PEFT's names, over the base named base_model_name_or_path."""
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "revision": None,
            "r": self.r,
            "lora_alpha": int(self.alpha) if self.alpha.is_integer() else self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": list(self.targets),
            "fan_in_fan_out": True,  # GPT-2's Conv1D stores [in, out]; PEFT sets this for it
            "bias": "none",
            "use_rslora": False,
            "use_dora": False,
            "modules_to_save": None,
            "init_lora_weights": True,
            "inference_mode": True,
        }


def base_name(source: Checkpoint, resuming: bool) -> str:
    """What a run's adapter names as its base (base_model_name_or_path): the hub repo, or the local folder's
    absolute path (so that a resume, PeftModel and minigpt2 find it from anywhere). source is what --model
    (or --resume: the base its adapter names) resolved to."""
    if resuming and source.adapter is None:
        raise CheckpointError(f"{source.source} holds a whole model, not a LoRA run's adapter; resume without --lora")
    if not resuming and source.adapter is not None:
        raise CheckpointError(
            f"{source.source} is a LoRA adapter itself; --lora trains a new one over a checkpoint: give its base "
            "(merged into another checkpoint first, to train over both)"
        )
    if source.weights_file is not None:
        raise CheckpointError(
            f"{source.weights_file} is a lone weights file; --lora trains over a checkpoint folder or hub repo, "
            "which its adapter can name"
        )
    return source.repo or str(source.folder.resolve())


def train_adapters(model: torch.nn.Module, spec: LoraSpec, resumed: Path | None = None) -> None:
    """Freeze every weight of the model but its adapters': new ones on the spec's targets (PEFT's init), or,
    resumed, those loaded beside the base (merge_lora=False), which must be the spec's."""
    if resumed is None:
        for name in target_names(model.config.n_layer, spec.targets):
            adapt(model, name, rank=spec.r, scale=spec.scale, dropout=spec.dropout)
    else:
        found = adapters(model)
        same = [(m.rank, m.scale, m.dropout) == (spec.r, spec.scale, spec.dropout) for m in found.values()]
        if list(found) != target_names(model.config.n_layer, spec.targets) or not all(same):
            raise CheckpointError(
                f"{resumed}'s adapters are not those of --lora {spec}; resume without --lora, or start a new run "
                "with another --out"
            )
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for module in adapters(model).values():
        module.lora_A.weight.requires_grad_(True)
        module.lora_B.weight.requires_grad_(True)


def target_names(n_layer: int, targets: tuple[str, ...]) -> list[str]:
    """The projections ("h.0.attn.c_attn") that targets name, in the model's order."""
    return [f"h.{i}.{p}" for i in range(n_layer) for p in PROJECTIONS if p.rpartition(".")[2] in targets]


def write_adapter(
    folder: Path, model: torch.nn.Module, config: dict, weights: dict[str, torch.Tensor] | None = None
) -> None:
    """The adapter files of a checkpoint: config, and the factors of the model's adapted projections under
    PEFT's names, out of weights (the model's state_dict(), or the one given: FSDP2's shards gathered)."""
    weights = model.state_dict() if weights is None else weights
    factors = {}
    for module in adapters(model):
        for factor in ("lora_A", "lora_B"):
            name = f"{module}.{factor}.weight"
            factors[PEFT_PREFIX + name] = weights[name].detach().contiguous().cpu()
    save_file(factors, str(folder / ADAPTER_FILES[0]), metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _number(text: str, given: dict[str, list[str]], key: str, kind: type, default):
    if key not in given:
        return default
    value = given[key][0]
    try:
        return kind(value)
    except ValueError:
        _bad(text, f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")


def _bad(text: str, why: str) -> NoReturn:
    raise ValueError(f"--lora {text!r}: {why}")
