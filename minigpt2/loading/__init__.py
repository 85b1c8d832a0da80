"""A GPT2 from a resolved checkpoint: the model is built on the meta device (no memory, no random init),
its modules are swapped where an option asks (int8, fast kernels), and the checkpoint's tensors are
attached as they are read. The load options are spelled once, in LoadOptions.

    model = GPT2.from_pretrained("gpt2-medium", dtype="bfloat16")      # resolves, then loads
    model, tokenizer = minigpt2.load("gpt2-medium")                    # both from one resolution
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
from .weights import read_weights

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
    config = read_config(checkpoint)
    generation_defaults = read_generation_defaults(checkpoint)
    files = checkpoint.weight_files()
    with torch.device("meta"):
        model = GPT2(config)
    convert = None
    if options.quantize is not None:
        convert = quantize.prepare_int8(model, options.device)
    elif options.fast and options.device.type == "cpu":
        kernels.swap_linears(model, kernels.OneDNNLinear.like)
    tied = config.tie_word_embeddings
    state = read_weights(
        files, device=options.device, dtype=options.dtype, tied=tied, copy=options.fast, convert=convert
    )
    _check_tensors(model, state, files[0] if len(files) == 1 else files[0].parent)
    model.load_state_dict(state, assign=True, strict=False)  # names and shapes are checked above
    if options.quantize is None:
        model.tie_weights()
    elif tied:
        quantize.quantize_tied_head(model)
    if options.process:
        process_weights(model, options.process if isinstance(options.process, Processing) else None)
    model.generation_defaults, model.generation_defaults_source = generation_defaults
    return model.eval()


def from_pretrained(cls, name_or_path, *, revision: str | None = None, **options) -> GPT2:
    """Load an official checkpoint by name ("gpt2-medium"), a hub repo ("org/name"), or a local path.
    revision: a hub branch, tag or commit. options: LoadOptions' (device, dtype, quantize, fast)."""
    return load_model(resolve(name_or_path, revision), LoadOptions(**options))


def load(name_or_path, *, revision: str | None = None, **options) -> tuple[GPT2, Tokenizer]:
    """The model and its tokenizer, from one resolution of the checkpoint (so, from the same snapshot)."""
    options = LoadOptions(**options)  # checked before anything is read
    checkpoint = resolve(name_or_path, revision)
    return load_model(checkpoint, options), Tokenizer.from_checkpoint(checkpoint)


def _check_tensors(model: GPT2, state: dict[str, torch.Tensor], where) -> None:
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
        raise CheckpointError(f"{where} does not match its config.json ({'; '.join(problems)})")


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
