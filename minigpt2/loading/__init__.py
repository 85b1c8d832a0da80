"""A GPT2 from a resolved checkpoint: the model is built on the meta device (no memory, no random init),
the module swaps an option asks for (int8, fast kernels, weight processing) plug in around the reading,
and the checkpoint's tensors are attached as they are read. The load options are spelled once, in
LoadOptions.

    model = GPT2.from_pretrained("gpt2-medium", dtype="bfloat16")    # resolves, then loads
    model, tokenizer = minigpt2.load("gpt2-medium")                  # both from one resolution
    model = GPT2.from_pretrained("x.pth", base="skt/kogpt2-base-v2")  # a state dict over a base's config
    model = GPT2.from_pretrained("out/ckpt.pt")                       # nanoGPT (formats.py); llm.c's .bin too
    model = GPT2.from_pretrained("./my-lora")                         # a PEFT adapter, merged (lora.py)
    model = GPT2.from_pretrained("./my-lora", merge_lora=False)       # ... kept beside the base's weights

This package never imports the model: the class to build is given (GPT2.from_pretrained passes itself).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch

from ..checkpoint import Checkpoint, CheckpointError, first_line, resolve
from ..config import GPT2Config
from ..generation.config import read_generation_defaults
from ..interp.processing import Processing
from ..tokenizer import Tokenizer
from .config_file import read_config
from .formats import GPT2_EOS
from .lora import read_adapter
from .swaps import SCHEMES, ModuleSwap, swaps_for
from .weights import read_sources, read_weights, stored_blocks

GPT2_VOCAB = GPT2_EOS + 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROCESSING_STEPS = tuple(f.name for f in dataclasses.fields(Processing))  # TransformerLens's keywords


@dataclass(frozen=True)
class LoadOptions:
    """How to load: every front door (GPT2.from_pretrained, minigpt2.load, the CLI) takes these.

    device: "cpu" (default), "cuda", "cuda:1", "mps".
    dtype: the weights' dtype, a torch.dtype or its name ("bfloat16"); None keeps the file's.
    quantize="int8": projections and LM head as int8 (quantize.py); opt-in, approximate.
    fast=True: fp32 and bf16 projections copied to [out, in] and multiplied by the kernel this machine
        measured fastest for each shape and row count (kernels.py, kernel_choice.py: timed once, kept in
        ~/.cache/minigpt2/kernels.json); slower to load, rounded unlike transformers'. It changes
        nothing with int8 or fp16, whose products have kernels of their own.
    process: TransformerLens's weight processing (interp/processing.py): True for all four steps, or a
        Processing naming some; the logits shift by a constant per position (center_unembed).
    merge_lora=False: a LoRA adapter kept beside its base's weights instead of merged into them, each adapted
        projection a LoRALinear whose branch has a hook point (blocks.{i}.attn.hook_lora_c_attn, ...).
    """

    device: str | torch.device | None = None
    dtype: torch.dtype | str | None = None
    quantize: str | None = None
    fast: bool = False
    process: bool | Processing = False
    merge_lora: bool = True

    def __post_init__(self):
        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "dtype", _check_dtype(self.dtype))
        if self.quantize is not None and self.quantize not in SCHEMES:
            raise ValueError(f"quantize must be one of {', '.join(SCHEMES)} (or None), got {self.quantize!r}")
        if self.process and self.quantize:
            raise ValueError("weight processing edits floating-point weights: give process= or quantize=, not both")
        if self.process and not self.merge_lora:
            raise ValueError(
                "weight processing folds into the base's weights, which a kept-separate LoRA branch does not see: "
                "give process= or merge_lora=False, not both"
            )

    @classmethod
    def build(cls, **options) -> LoadOptions:
        """LoadOptions from keywords, taking TransformerLens's too: from_pretrained(name, fold_ln=True,
        center_writing_weights=True, center_unembed=True, fold_value_biases=True) is process=True, and,
        as in TransformerLens, a step that is not named is applied (fold_ln=False: the other three)."""
        steps = {name: options.pop(name) for name in PROCESSING_STEPS if name in options}
        if steps:
            if options.get("process"):
                raise ValueError(f"give process= or TransformerLens's keywords ({', '.join(steps)}), not both")
            options["process"] = Processing(**steps)
        return cls(**options)

    @property
    def swaps(self) -> list[ModuleSwap]:
        return swaps_for(self)


def load_model(checkpoint: Checkpoint, options: LoadOptions, model_class):
    """A model_class (GPT2) with the checkpoint's weights, loaded as the options ask."""
    if checkpoint.adapter is not None and options.quantize is not None and not options.merge_lora:
        raise ValueError(
            "merge_lora=False keeps a LoRA adapter's branches beside float weights; give quantize= or "
            "merge_lora=False, not both"
        )
    if checkpoint.adapter is None and not options.merge_lora:
        raise ValueError(
            f"merge_lora=False keeps a LoRA adapter's branches, and {checkpoint.label} is no adapter (it has no "
            "adapter_config.json); load it without merge_lora="
        )
    # A folder shows first that it is a checkpoint (its config.json); a weights file may state its own shape.
    config = read_config(checkpoint) if checkpoint.weights_file is None else None
    files = checkpoint.weight_files()
    sources = read_sources(files)
    stated = getattr(sources[0], "config", None)  # nanoGPT's and llm.c's files state their own shape
    config = stated or config or read_config(checkpoint)
    where = files[0] if len(files) == 1 else files[0].parent
    against = f"the shape {sources[0].stated_by} give" if stated else f"{checkpoint.label}'s config.json"
    if (blocks := stored_blocks(sources)) != config.n_layer:  # before a model of n_layer blocks is built
        raise CheckpointError(f"{where} holds {blocks} blocks, and {against} says n_layer {config.n_layer}")
    try:
        with torch.device("meta"):
            model = model_class(config)
    except (RuntimeError, OverflowError) as e:  # a shape too large to describe (an edited config.json)
        raise CheckpointError(f"{against} asks for a model torch cannot build: {first_line(e)}") from None
    swaps = options.swaps
    converts = [convert for swap in swaps if (convert := swap.prepare(model, options.device)) is not None]
    convert = converts[0] if converts else None  # int8 is the only swap that converts, and excludes the others
    # An adapter merges into the weights as stored; int8 then quantizes the merged weights (convert_merged).
    merge_first = checkpoint.adapter is not None and convert is not None
    state = read_weights(
        sources,
        device=options.device,
        dtype=None if merge_first else options.dtype,
        tied=config.tie_word_embeddings,
        copy=any(swap.copies_weights for swap in swaps),
        convert=None if merge_first else convert,
    )
    adapter = read_adapter(checkpoint.adapter, state) if checkpoint.adapter is not None else None
    if adapter is not None and options.merge_lora:
        adapter.merge_into(state)
    if merge_first:
        state = convert_merged(state, convert, options.dtype)
    _check_tensors(model, state, where, against)
    model.load_state_dict(state, assign=True, strict=False)  # names and shapes are checked above
    model.tie_weights()
    if adapter is not None and not options.merge_lora:
        adapter.keep_in(model)
    for swap in swaps:
        swap.finish(model)
    model.checkpoint = checkpoint
    if checkpoint.config is not None:  # else the model's own: a file that states its shape may come alone
        model.generation_defaults, model.generation_defaults_source = read_generation_defaults(checkpoint)
    return model.eval()


def resolve_for_loading(name_or_path, revision: str | None, base, config) -> Checkpoint:
    """The checkpoint to load: base= names a base checkpoint (its config.json and tokenizer) for a weights
    file or an adapter; config= was its old name, and now, as in transformers, is a GPT2Config."""
    if config is not None and not isinstance(config, GPT2Config):
        warnings.warn(
            "config= naming a base checkpoint is now base= (--base); config= takes a GPT2Config, as in transformers",
            DeprecationWarning,
            stacklevel=3,
        )
        if base is not None:
            raise ValueError("give the base checkpoint once, as base=")
        base, config = config, None
    if config is not None:
        raise ValueError(
            "config=GPT2Config(...) builds a new model: use GPT2(config); to load weights over another "
            "checkpoint's config.json, give base=NAME"
        )
    return resolve(name_or_path, revision, base=base)


def load(model_class, name_or_path, *, revision: str | None = None, base=None, config=None, **options):
    """The model and its tokenizer, from one resolution of the checkpoint (so, from the same snapshot)."""
    options = LoadOptions.build(**options)  # checked before anything is read
    checkpoint = resolve_for_loading(name_or_path, revision, base, config)
    model = load_model(checkpoint, options, model_class)
    return model, Tokenizer.from_checkpoint(tokenizer_checkpoint(checkpoint, model))


def convert_merged(state: dict, convert, dtype) -> dict:
    """What read_weights keeps, from weights already read and merged: each tensor converted, or in dtype."""
    kept = {}
    for name, tensor in state.items():
        converted = convert(name, tensor)
        kept.update(converted if converted is not None else {name: tensor.to(dtype=dtype)})
    return kept


def tokenizer_checkpoint(checkpoint: Checkpoint, model) -> Checkpoint:
    """Where the model's tokenizer is: its checkpoint's files, or, for a file that came alone (nanoGPT's
    ckpt.pt, llm.c's .bin: no config.json, no tokenizer beside it) with GPT-2's vocabulary, GPT-2's own."""
    if checkpoint.config is not None or checkpoint.files & {"tokenizer.json", "vocab.json"}:
        return checkpoint
    if model.config.vocab_size < GPT2_VOCAB:
        raise CheckpointError(
            f"{checkpoint.weights_file} has a {model.config.vocab_size}-token vocabulary, not GPT-2's, and no "
            "tokenizer beside it; give a base checkpoint that has its tokenizer: base=BASE (--base BASE)"
        )
    try:
        return resolve("gpt2")
    except CheckpointError as e:
        raise CheckpointError(
            f"{checkpoint.weights_file} has no tokenizer beside it, so GPT-2's is read, and {first_line(e)}; or give "
            "a base checkpoint that has the tokenizer: base=BASE (--base BASE)"
        ) from None


def _check_tensors(model, state: dict[str, torch.Tensor], where, against: str) -> None:
    expected = {name: p.shape for name, p in model.state_dict().items()}
    if model.config.tie_word_embeddings:  # wte itself, or (int8) quantized from it
        expected = {name: shape for name, shape in expected.items() if not name.startswith("lm_head.")}
    problems = []
    missing = [n for n in expected if n not in state]
    unexpected = [n for n in state if n not in expected]
    wrong = [
        f"{n} {tuple(state[n].shape)} (config says {tuple(s)})"
        for n, s in expected.items()
        if n in state and state[n].shape != s
    ]
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{label}: {', '.join(names[:3])}{more}")
    if problems:
        raise CheckpointError(f"{where} does not match {against} ({'; '.join(problems)})")


def check_device(device) -> torch.device:
    """A torch.device that exists on this machine, or a clear error."""
    try:
        device = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: {first_line(e)}") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ValueError(f"device {str(device)!r} is not available on this machine; use 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def _check_dtype(dtype) -> torch.dtype | None:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        return DTYPES[dtype]
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype
