"""Finding and reading checkpoints: official names, hub repos, local directories and files.

A name such as "gpt2-medium" or "org/name" is fetched through huggingface_hub into its
standard cache (so HF_HOME, HF_HUB_OFFLINE, revisions and earlier downloads behave as
everywhere else); a path that exists is read where it is.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError, safe_open

from . import quantize as quantization
from .activations import ACTIVATIONS, LEARNED
from .model import GPT2, GPT2Config

OFFICIAL_REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}
# In transformers' order of preference; an *.index.json names the shards of a sharded checkpoint.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as it is; the message says what is wrong and what to do."""


def load_model(
    name_or_path: str,
    *,
    device=None,
    dtype=None,
    revision: str | None = None,
    quantize: str | None = None,
    contiguous: bool = False,
) -> GPT2:
    """Build the model on the meta device (no memory, no random init) and attach the checkpoint's tensors."""
    device = check_device(device)
    quantization.check(quantize)
    config = read_config(find_file(name_or_path, "config.json", revision, required=True))
    files = weight_files(name_or_path, revision)
    with torch.device("meta"):
        model = GPT2(config)
    tied = config.tie_word_embeddings
    state = read_weights(files, device=device, dtype=dtype, tied=tied, quantize=quantize, contiguous=contiguous)
    _check_tensors(model, state, files[0] if len(files) == 1 else files[0].parent)
    int8 = {name: state.pop(name) for name in list(state) if isinstance(state[name], quantization.Int8Weight)}
    model.load_state_dict(state, assign=True, strict=not int8)  # names and shapes are checked above
    if int8:
        quantization.attach(model, int8)
    return model.eval()


def find_file(name_or_path: str, filename: str, revision: str | None = None, *, required: bool = False) -> Path | None:
    """`filename` from a local checkpoint (a directory, or the folder of a weights file) or a hub repo."""
    name_or_path = str(name_or_path)
    local = Path(name_or_path).expanduser()
    if local.exists():
        if revision is not None:
            raise ValueError(f"revision {revision!r} applies to hub repos, and {name_or_path} is a local path")
        found = (local.parent if local.is_file() else local) / filename
        if found.is_file():
            return found
        if required:
            raise CheckpointError(f"{found} not found: a checkpoint needs its {filename} next to the weights")
        return None
    if name_or_path not in OFFICIAL_REPOS and not _HUB_REPO_ID.fullmatch(name_or_path):
        raise FileNotFoundError(
            f"{name_or_path}: no such file or directory, and not a hub repo id such as 'gpt2-medium' or 'org/name'"
        )
    return _hub_file(OFFICIAL_REPOS.get(name_or_path, name_or_path), filename, revision, required)


def _hub_file(repo: str, filename: str, revision: str | None, required: bool) -> Path | None:
    at = f"{repo}@{revision}" if revision else repo
    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except LocalEntryNotFoundError:
        if not required:  # offline: the caller may have another file to try, and says so if it has none
            return None
        raise CheckpointError(
            f"{filename} of {at} is not in the local hub cache and the hub cannot be reached (no network, or "
            "HF_HUB_OFFLINE is set); connect once to download it, or pass a local checkpoint directory"
        ) from None
    except EntryNotFoundError:  # the hub answered: no such file (the offline case, a subclass, is caught above)
        if required:
            raise CheckpointError(f"the hub repo {at} has no {filename}; is it a GPT-2 checkpoint?") from None
        return None
    except RevisionNotFoundError:
        raise CheckpointError(
            f"the hub repo {repo} has no revision {revision!r}; check the branch, tag or commit"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{repo!r} is neither a local path nor a model repo on the hub (private or gated repos need "
            "`hf auth login`); check the name"
        ) from None
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"could not download {filename} of {at}: {_first_line(e)}") from None


def weight_files(name_or_path: str, revision: str | None = None) -> list[Path]:
    """The checkpoint's weights: one file, or the shards that its *.index.json names (downloaded if need be)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if not path.name.endswith((".safetensors", ".bin", ".index.json")):
            raise CheckpointError(
                f"{path} is not a weights file; give a .safetensors or .bin file, or a checkpoint directory"
            )
        found, name_or_path = path, path.parent
    else:
        found = next((f for name in WEIGHT_FILES if (f := find_file(name_or_path, name, revision))), None)
    if found is None:
        hint = "" if path.exists() else " (or, offline, none of them is in the local hub cache)"
        raise CheckpointError(f"{name_or_path} has none of {', '.join(WEIGHT_FILES)}{hint}")
    if not found.name.endswith(".index.json"):
        return [found]
    return [find_file(name_or_path, shard, revision, required=True) for shard in _shard_names(found)]


def _shard_names(index: Path) -> list[str]:
    """The files a sharded checkpoint's index maps its tensors to, each once, in order."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index} is not a readable shard index: {_first_line(e)}") from None
    if not names or any(not isinstance(n, str) or "/" in n or "\\" in n or n.startswith(".") for n in names):
        raise CheckpointError(f"{index} names no shards, or names files outside its own folder")
    return names


def read_config(path: Path) -> GPT2Config:
    """GPT2Config from a transformers config.json, refusing what this implementation does not compute."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable JSON config: {_first_line(e)}") from None
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
        raise CheckpointError(f"{path} has an invalid value: {_first_line(e)}") from None


def read_weights(
    paths: list[Path],
    *,
    device=None,
    dtype=None,
    tied: bool = True,
    quantize: str | None = None,
    contiguous: bool = False,
) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint's file(s) under minigpt2's names, on `device` in `dtype` (None: as stored).

    Official files store the projections [in, out] (transformers' Conv1D); nn.Linear wants
    [out, in], which a transposed view gives without a copy. Safetensors files are memory
    mapped, so fp32 on the CPU is not copied at all. Anything else (another dtype, half
    precision as stored, another device) is copied and written [out, in] in order, the layout
    that torch's bf16/fp16 matrix-vector kernels read fastest.
    tied: the LM head is the token embedding, so a stored lm_head.weight is left unread.
    quantize="int8": each projection weight becomes an Int8Weight as it is read, from its own mapping
    of the file, so that no more than one fp32 projection is ever held.
    contiguous=True: every tensor is copied, so fp32 projections are written [out, in] in order too.
    """
    device = torch.device(device or "cpu")
    state = {}
    for path in paths:
        # A file that is copied is read through one mapping per tensor, so that its pages leave
        # memory as each tensor is copied, and the peak stays near the copies' size.
        copying = contiguous or _copied(_stored_dtype(path), dtype, device, quantize)
        for name, tensor in _read_tensors(path, one_mapping_per_tensor=copying):
            name = _minigpt2_name(name, tied)
            if name is None:
                continue
            if name.endswith(quantization.PROJECTIONS) and tensor.dim() == 2:
                tensor = tensor.t()
                if quantize is not None:
                    state[name] = quantization.Int8Weight(tensor).to(device)
                    continue
            copy = contiguous or _copied(tensor.dtype, dtype, device, quantize)
            state[name] = tensor.to(device=device, dtype=dtype, memory_format=torch.contiguous_format, copy=copy)
    return state


def _copied(stored: torch.dtype | None, dtype: torch.dtype | None, device: torch.device, quantize) -> bool:
    """Whether a tensor stored as `stored` (None: not known yet) is copied rather than used where it lies.
    Quantizing copies what it keeps too, so that no view holds a mapping of the fp32 file."""
    return quantize is not None or device.type != "cpu" or (dtype or stored) != torch.float32


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _stored_dtype(path: Path) -> torch.dtype | None:
    """The dtype of a safetensors file's weights, read from its header; None for a .bin (read whole anyway)."""
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(path, framework="pt") as f:
            weight = next((n for n in f.keys() if n.endswith(".weight")), None)
            return _SAFETENSORS_DTYPES.get(f.get_slice(weight).get_dtype()) if weight else None
    except (SafetensorError, OSError) as e:
        raise _unreadable_safetensors(path, e) from None


def _read_tensors(path: Path, *, one_mapping_per_tensor: bool = False):
    if path.suffix == ".bin":
        try:  # weights_only: a .bin is a pickle, and nothing in it may run code
            state = _torch_load(path)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
            raise CheckpointError(f"{path} is not a readable PyTorch weights file: {_first_line(e)}") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} holds a {type(state).__name__}, not a dictionary of tensors")
        yield from state.items()
        return
    try:
        if not one_mapping_per_tensor:  # zero-copy: the tensors are views of one mapping of the file
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
            return
        with safe_open(path, framework="pt") as f:
            names = list(f.keys())
        for name in names:
            with safe_open(path, framework="pt") as f:  # unmapped again once the caller has converted the tensor
                yield name, f.get_tensor(name)
    except (SafetensorError, OSError) as e:
        raise _unreadable_safetensors(path, e) from None


def _unreadable_safetensors(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable safetensors file ({_first_line(error)}); download it again")


_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # causal-mask buffers, not weights


def _torch_load(path: Path):
    """A .bin's tensors, memory-mapped where the file's format allows it (torch >= 1.6 wrote such files)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _minigpt2_name(name: str, tied: bool) -> str | None:
    """Official files have no prefix, save_pretrained's have "transformer."; both map to ours."""
    name = name.removeprefix("transformer.")
    if (tied and name == "lm_head.weight") or _BUFFER.fullmatch(name):
        return None  # a tied head is wte, and the mask is computed, not stored
    return name


def _check_tensors(model: GPT2, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = {name: p.shape for name, p in model.state_dict().items()}
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
        raise CheckpointError(f"{path} does not match its config.json ({'; '.join(problems)})")


def check_device(device) -> torch.device:
    """A torch.device that exists on this machine, or a clear error."""
    try:
        device = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: {_first_line(e)}") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ValueError(f"device {str(device)!r} is not available on this machine; use 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
