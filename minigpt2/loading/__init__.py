"""A GPT2 from a resolved checkpoint: the model is built on the meta device (no memory, no random init),
its modules are swapped where an option asks (int8, fast kernels), and the checkpoint's tensors are
attached as they are read. The load options are spelled once, in LoadOptions.

    model = GPT2.from_pretrained("gpt2-medium", dtype="bfloat16")      # resolves, then loads
    model, tokenizer = minigpt2.load("gpt2-medium")                    # both from one resolution
    model = GPT2.from_pretrained("x.pth", config="skt/kogpt2-base-v2")  # a state dict over a base's config
    model = GPT2.from_pretrained("out/ckpt.pt")                         # nanoGPT (formats.py); llm.c's .bin too
    model = GPT2.from_pretrained("./my-lora")                           # a PEFT adapter, merged (lora.py)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import kernels, quantize
from ..checkpoint import Checkpoint, CheckpointError, first_line, resolve
from ..model import GPT2
from ..processing import Processing, process_weights
from ..tokenizer import Tokenizer
from .config import read_config, read_generation_defaults
from .formats import GPT2_EOS
from .lora import merge_adapter
from .weights import read_sources, read_weights

GPT2_VOCAB = GPT2_EOS + 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadOptions:
    """How to load: every front door (GPT2.from_pretrained, minigpt2.load, the CLI) takes these.

    device: "cpu" (default), "cuda", "cuda:1", "mps".
    dtype: the weights' dtype, a torch.dtype or its name ("bfloat16"); None keeps the file's.
    quantize="int8": projections and LM head as int8 (quantize.py); opt-in, approximate.
    fast=True: fp32 projections copied to [out, in] and multiplied by oneDNN where it is faster
        (kernels.py); slower to load, rounded unlike transformers'.
    process: TransformerLens's weight processing (processing.py): True for all four steps, or a
        Processing naming some; the logits shift by a constant per position (center_unembed).
    """

    device: str | torch.device | None = None
    dtype: torch.dtype | str | None = None
    quantize: str | None = None
    fast: bool = False
    process: bool | Processing = False

    def __post_init__(self):
        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "dtype", _check_dtype(self.dtype))
        quantize.check(self.quantize)
        if self.process and self.quantize:
            raise ValueError("weight processing edits floating-point weights: give process= or quantize=, not both")


def load_model(checkpoint: Checkpoint, options: LoadOptions | None = None) -> GPT2:
    options = options or LoadOptions()
    if checkpoint.adapter is not None and options.quantize is not None:
        raise ValueError("a LoRA adapter is merged into float weights; load it without quantize=")
    # A folder shows first that it is a checkpoint (its config.json); a weights file may state its own shape.
    config = read_config(checkpoint) if checkpoint.weights_file is None else None
    files = checkpoint.weight_files()
    sources = read_sources(files)
    stated = getattr(sources[0], "config", None)  # nanoGPT's and llm.c's files state their own shape
    config = stated or config or read_config(checkpoint)
    with torch.device("meta"):
        model = GPT2(config)
    convert = None
    if options.quantize is not None:
        convert = quantize.prepare_int8(model, options.device)
    elif options.fast and options.device.type == "cpu":
        kernels.swap_linears(model, kernels.OneDNNLinear.like)
    tied = config.tie_word_embeddings
    state = read_weights(
        sources, device=options.device, dtype=options.dtype, tied=tied, copy=options.fast, convert=convert
    )
    against = f"the shape {sources[0].stated_by} give" if stated else f"{checkpoint.label}'s config.json"
    _check_tensors(model, state, files[0] if len(files) == 1 else files[0].parent, against)
    if checkpoint.adapter is not None:
        merge_adapter(state, checkpoint.adapter)
    model.load_state_dict(state, assign=True, strict=False)  # names and shapes are checked above
    if options.quantize is None:
        model.tie_weights()
    elif tied:
        quantize.quantize_tied_head(model)
    if options.process:
        process_weights(model, options.process if isinstance(options.process, Processing) else None)
    if checkpoint.config is not None:  # else the model's own: a file that states its shape may come alone
        model.generation_defaults, model.generation_defaults_source = read_generation_defaults(checkpoint)
    return model.eval()


def from_pretrained(cls, name_or_path, *, revision: str | None = None, config=None, **options) -> GPT2:
    """Load an official checkpoint by name ("gpt2-medium"), a hub repo ("org/name"), or a local path: a
    checkpoint folder, a weights file (safetensors, a torch.save state dict, nanoGPT's ckpt.pt, llm.c's .bin)
    or a PEFT LoRA adapter folder. revision: a hub branch, tag or commit. config: the base checkpoint whose
    config.json and tokenizer a weights file or an adapter borrows. options: LoadOptions' (device, dtype, ...)."""
    return load_model(resolve(name_or_path, revision, base=config), LoadOptions(**options))


def load(name_or_path, *, revision: str | None = None, config=None, **options) -> tuple[GPT2, Tokenizer]:
    """The model and its tokenizer, from one resolution of the checkpoint (so, from the same snapshot)."""
    options = LoadOptions(**options)  # checked before anything is read
    checkpoint = resolve(name_or_path, revision, base=config)
    model = load_model(checkpoint, options)
    return model, Tokenizer.from_checkpoint(tokenizer_checkpoint(checkpoint, model))


def tokenizer_checkpoint(checkpoint: Checkpoint, model: GPT2) -> Checkpoint:
    """Where the model's tokenizer is: its checkpoint's files, or, for a file that came alone (nanoGPT's
    ckpt.pt, llm.c's .bin: no config.json, no tokenizer beside it) with GPT-2's vocabulary, GPT-2's own."""
    if checkpoint.config is not None or checkpoint.files & {"tokenizer.json", "vocab.json"}:
        return checkpoint
    if model.config.vocab_size < GPT2_VOCAB:
        raise CheckpointError(
            f"{checkpoint.weights_file} has a {model.config.vocab_size}-token vocabulary, not GPT-2's, and no "
            "tokenizer beside it; give a base checkpoint that has its tokenizer: config=BASE (--config BASE)"
        )
    try:
        return resolve("gpt2")
    except CheckpointError as e:
        raise CheckpointError(
            f"{checkpoint.weights_file} has no tokenizer beside it, so GPT-2's is read, and {first_line(e)}; or give "
            "a base checkpoint that has the tokenizer: config=BASE (--config BASE)"
        ) from None


def _check_tensors(model: GPT2, state: dict[str, torch.Tensor], where, against: str) -> None:
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
