"""A training run's settings, whole: TrainConfig states every default once (the command's options leave out
what is not given, so these stand)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

AUTOCAST = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHAPE_FIELDS = ("shape", "n_layer", "n_head", "n_embd", "vocab_size")


@dataclass
class TrainConfig:
    """A run, whole: every default is stated here once (the command's options leave out what is not given)."""

    data: str = ""  # a text file, a folder of .txt/.jsonl, llm.c's .bin shards, hf:NAME; JSONL of {prompt, completion}
    dataset_config: str | None = None  # hf:NAME data: load_dataset's configuration name
    dataset_split: str = "train"  # hf:NAME data: the split read (its end held out as val)
    text_field: str = "text"  # hf:NAME data: the column whose text is a document
    out: str = "out"  # checkpoints OUT/step-NNNNNN and the log
    model: str | None = None  # a checkpoint to fine-tune; None: from scratch, in the shape below
    shape: str | None = None  # from scratch: a preset (gpt2, gpt2-medium, ...), the sizes below over it
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    vocab_size: int | None = None  # from scratch; None: the tokenizer's
    block_size: int | None = None  # tokens a row; None: the model's n_positions (from scratch it sets them)
    tokenizer: str = "gpt2"  # from scratch, without char: the checkpoint whose tokenizer reads the data
    char: bool = False  # from scratch: a character vocabulary built from the data (nanoGPT's shakespeare_char)
    instructions: bool = False  # the data is JSONL of {prompt, completion}: only completions are learned
    val_fraction: float = 0.1  # the end of the data held out (llm.c's "val" shards instead, when there are)
    steps: int = 1000
    batch_size: int = 12
    tokens_per_step: int | None = None  # None: one batch a step; else batches accumulated to this many tokens
    lr: float | None = None  # None: default_lr's, by the kind of run
    min_lr: float | None = None  # None: lr / 10
    warmup: int = 0  # steps
    schedule: str = "cosine"  # after warmup: cosine or linear down to min_lr at the last step, or constant
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0: no clipping (the norm is logged either way)
    dropout: float | None = None  # embd/attn/resid_pdrop; None: the checkpoint's (0.1 in transformers), 0 from scratch
    # "r=8,alpha=16,targets=c_attn,c_proj,c_fc,dropout=0.05": only LoRA adapters train, saved in PEFT's layout
    # (training/lora.py; left out: r 8, alpha 2r, targets c_attn, dropout 0; "": all four); None: every weight
    lora: str | None = None
    device: str = "cpu"
    compile: bool = False  # torch.compile the model: on CUDA; on the CPU where its first steps time it faster
    gradient_checkpointing: bool = False  # each block's activations recomputed in backward: less memory, more time
    fsdp: bool = False  # under torchrun: the model sharded over the processes (FSDP2), not a copy in each
    dtype: str = "float32"  # autocast: float32 (none), bfloat16 (CPU, CUDA), float16 (CUDA, with a GradScaler)
    eval_every: int = 250  # steps; and at the last
    eval_batches: int = 20  # the fixed val set: this many batches spread over the val split
    eval_choices: str | None = None  # multiple-choice JSONL scored at every val loss: choice_accuracy (track.py)
    track_every: int = 0  # steps between probes of the heads (induction, previous-token, ...: track.py); 0: none
    sample_every: int = 0  # steps between seeded samples; 0: none
    sample_tokens: int = 64
    save_every: int = 1000  # steps; and at the last
    keep: int = 3  # checkpoints kept, the newest
    log_every: int = 10  # a progress line every N steps when stderr is not a terminal (every step when it is)
    seed: int = 1337
    log: str | None = None  # the JSONL log; None: OUT/log.jsonl
    tensorboard: bool = True  # TensorBoard's scalars in OUT/tensorboard, when tensorboard is installed
    plot: bool = False  # OUT/loss.png at the end, the loss curves of the log (matplotlib)


def default_lr(config: TrainConfig) -> float:
    """6e-4 from scratch (nanoGPT's train.py), 3e-5 fine-tuning (finetune_shakespeare), 2e-4 LoRA (its paper's)."""
    if config.lr:
        return config.lr
    return 6e-4 if config.model is None else 3e-5 if config.lora is None else 2e-4


def autocast_dtype(dtype: str, device: torch.device, fsdp: bool) -> torch.dtype | None:
    """The autocast dtype a run's --dtype names (None: float32), refused where it cannot train, and a
    warning where it trains slowly: bf16 on a CPU whose oneDNN has no bf16 kernels (AVX2 only) emulates its
    matrix products, and a step runs 10-40x slower than in float32 (measured on an AVX2 EPYC)."""
    if dtype not in AUTOCAST:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(AUTOCAST)}")
    amp = AUTOCAST[dtype]
    if amp is torch.float16 and device.type != "cuda":
        raise ValueError("float16 training needs CUDA (for its GradScaler); on the CPU use bfloat16")
    if amp is torch.float16 and fsdp:
        raise ValueError("--fsdp trains in float32 or bfloat16: a GradScaler would check each rank's shard alone")
    if amp is torch.bfloat16 and device.type == "cpu" and not native_bf16():
        warnings.warn(
            f"bfloat16 on this CPU ({torch.backends.cpu.get_cpu_capability()}, no native bf16) is emulated: "
            "a step runs 10-40x slower than in float32; train in float32 here",
            stacklevel=3,
        )
    return amp


def native_bf16() -> bool:
    """Whether this CPU has bf16 kernels (oneDNN's: AVX-512 or AMX), rather than emulating bf16 in fp32."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()
