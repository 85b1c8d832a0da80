"""The model a run trains and the tokenizer that reads its data: a checkpoint to fine-tune (whole, or its LoRA
adapters alone), a run's own checkpoint to resume, or a shape trained from scratch (a preset, sizes over it,
and a character vocabulary built from the data or a checkpoint's tokenizer)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, resolve
from ..model import GPT2, PRESETS, GPT2Config
from ..tokenizer import Tokenizer
from . import checkpoints, data, lora
from .config import TrainConfig

SHAPE_FIELDS = ("shape", "n_layer", "n_head", "n_embd", "vocab_size")


@dataclass
class Built:
    model: GPT2
    tokenizer: Tokenizer | data.CharVocab
    block_size: int  # tokens a row
    vocab: data.CharVocab | None = None  # a character vocabulary; None: a checkpoint's tokenizer
    tokenizer_files: dict[str, Path] = field(default_factory=dict)  # copied into every checkpoint
    base_config: dict | None = None  # the fine-tuned checkpoint's config.json, which the run's carries on
    lora_spec: lora.LoraSpec | None = None
    adapter_config: dict | None = None  # a LoRA run's adapter_config.json


def build(c: TrainConfig, source: "Path | data.HubData", resume_from: Path | None, device: torch.device) -> Built:
    """The run's model (on the device, or the CPU for fully_shard to move shard by shard) and tokenizer."""
    where = torch.device("cpu") if c.fsdp else device
    spec = lora.LoraSpec.parse(c.lora) if c.lora is not None else None
    if spec and not (resume_from or c.model):
        raise ValueError("--lora trains adapters over a checkpoint: give --model")
    if resume_from or c.model:
        if c.char and not resume_from:
            raise ValueError("--char builds a vocabulary for a model trained from scratch; --model brings its own")
        checkpoint = resolve(resume_from or c.model)
        keep_adapter = bool(spec and resume_from)  # a resumed LoRA run's, to train on
        adapter_config = None
        if spec:  # resuming, the checkpoint's base is the one that the run's adapter names
            adapter_config = spec.adapter_config(lora.base_name(checkpoint, resuming=keep_adapter))
        model = GPT2.from_pretrained(resume_from or c.model, device=where, dtype="float32", merge_lora=not keep_adapter)
        own_weights(model)
        if spec:
            lora.train_adapters(model, spec, resumed=resume_from)
        vocab = data.CharVocab.load(checkpoint.folder) if c.char else None
        tokenizer = vocab or Tokenizer.from_checkpoint(checkpoint)
        files, base_config = _tokenizer_files(checkpoint), checkpoint.config
    else:
        vocab = data.CharVocab.from_data(source) if c.char else None
        tokenizer_checkpoint = None if vocab else resolve(c.tokenizer)
        tokenizer = vocab or Tokenizer.from_checkpoint(tokenizer_checkpoint)
        model = GPT2(shape(c, tokenizer)).to(where)
        files = _tokenizer_files(tokenizer_checkpoint) if tokenizer_checkpoint else {}
        base_config = adapter_config = None
    if c.dropout is not None:
        set_dropout(model, c.dropout)
    model.gradient_checkpointing = c.gradient_checkpointing
    n_positions = model.config.n_positions
    block_size = c.block_size or n_positions
    if block_size > n_positions:
        raise ValueError(
            f"--block-size {block_size} is longer than the model's context (n_positions {n_positions}); "
            f"give at most {n_positions}"
        )
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model's vocabulary "
            f"({model.config.vocab_size})"
        )
    return Built(model, tokenizer, block_size, vocab, files, base_config, spec, adapter_config)


def shape(c: TrainConfig, tokenizer) -> GPT2Config:
    """From scratch: the preset, the sizes given over it, the tokenizer's vocabulary, block_size positions."""
    if c.shape is None and c.n_layer is None and c.n_head is None and c.n_embd is None:
        raise ValueError(
            "give --model to fine-tune a checkpoint, or a shape to train from scratch: --shape, --n-layer ..."
        )
    if c.shape is not None and c.shape not in PRESETS:
        raise ValueError(f"unknown shape {c.shape!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[c.shape] if c.shape else GPT2Config()
    sizes = {k: getattr(c, k) for k in ("n_layer", "n_head", "n_embd") if getattr(c, k) is not None}
    return replace(
        preset,
        **sizes,
        vocab_size=c.vocab_size or tokenizer.vocab_size,
        n_positions=c.block_size or preset.n_positions,
        eos_token_id=tokenizer.eos_token_id,
    )


def check_resumed_shape(folder: Path, saved: GPT2Config, overrides: dict) -> None:
    """A resume's shape options, when given, must name the shape its checkpoint holds."""
    asked = {k: v for k, v in overrides.items() if k in SHAPE_FIELDS and v is not None}
    if not asked:
        return
    wanted = replace(PRESETS.get(asked.get("shape"), saved), **{k: v for k, v in asked.items() if k != "shape"})
    if sizes(wanted) != sizes(saved):
        raise CheckpointError(
            f"{folder} holds a model of {_describe(saved)}, and the options ask for {_describe(wanted)}; "
            "resume without them, or start a new run with another --out"
        )


def sizes(config: GPT2Config) -> tuple:
    return config.n_layer, config.n_head, config.n_embd, config.vocab_size


def _describe(config: GPT2Config) -> str:
    return f"{config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, {config.vocab_size} tokens"


def set_dropout(model: GPT2, p: float) -> None:
    """Every dropout of the model at p, and its config saying so (config.json carries it to the checkpoint)."""
    model.config = replace(model.config, embd_pdrop=p, attn_pdrop=p, resid_pdrop=p)  # also checks 0 <= p < 1
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def own_weights(model: GPT2) -> None:
    """Loaded fp32 weights can be views of the checkpoint file's mapping (the projections transposed views):
    training gets contiguous copies of its own."""
    state = {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)
    model.tie_weights()


def _tokenizer_files(checkpoint) -> dict[str, Path]:
    return {n: checkpoint.path(n) for n in checkpoints.TOKENIZER_FILES if n in checkpoint.files}
