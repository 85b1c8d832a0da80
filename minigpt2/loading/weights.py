"""Reading a checkpoint's tensors (safetensors, or any file formats.py reads: .bin, .pt, .pth, nanoGPT's,
llm.c's; one file or shards) under minigpt2's names.

Official files store the projections [in, out] (transformers' Conv1D); nn.Linear wants [out, in],
which a transposed view gives without a copy. Safetensors files are memory mapped, so fp32 on the
CPU is not copied at all. Anything else (another dtype, half precision as stored, another device,
or copy=True) is copied and written [out, in] in order, the layout that torch's bf16/fp16
matrix-vector kernels and oneDNN read fastest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..checkpoint import CheckpointError, first_line
from .formats import FileWeights, read_file

PROJECTIONS = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # stored [in, out] by the files
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # causal-mask buffers, not weights
_BLOCK = re.compile(r"(?:^|\.)h\.(\d+)\.")  # a transformer block's tensor: h.{i}. or transformer.h.{i}.
_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}

# What the reader does with each tensor once it is read (int8 quantizes it): name, tensor -> {name: tensor}
Convert = Callable[[str, torch.Tensor], dict[str, torch.Tensor]]


def read_weights(
    sources: list[Path | FileWeights],
    *,
    device: torch.device,
    dtype=None,
    tied: bool = True,
    copy: bool = False,
    convert=None,
) -> dict[str, torch.Tensor]:
    """The tensors of the file(s) (safetensors paths, or files formats.py has read), [out, in] for
    nn.Linear, on `device` in `dtype` (None: as stored).

    tied: the LM head is the token embedding, so a stored lm_head.weight is left unread.
    copy: every tensor is copied, so fp32 projections are written [out, in] in order too.
    convert(name, tensor): given a tensor as it is read ([out, in], before any copy), what to keep instead,
        or None to keep the tensor. Everything is then copied and each tensor read from its own mapping of
        the file, so that no more than one of the file's tensors is ever held beyond what is kept.
    """
    copy = copy or convert is not None  # nothing kept may hold a mapping of the file it converts
    state = {}
    for source in sources:
        # A file that is copied is read through one mapping per tensor, so that its pages leave
        # memory as each tensor is copied, and the peak stays near the copies' size.
        copying = copy or _copied(_stored_dtype(source), dtype, device)
        for name, tensor in _read_tensors(source, one_mapping_per_tensor=copying):
            name = _minigpt2_name(name, tied)
            if name is None:
                continue
            if name.endswith(PROJECTIONS) and tensor.dim() == 2:
                tensor = tensor.t()
            if convert is not None and (converted := convert(name, tensor)) is not None:
                state.update(converted)
                continue
            copied = copy or _copied(tensor.dtype, dtype, device)
            state[name] = tensor.to(device=device, dtype=dtype, memory_format=torch.contiguous_format, copy=copied)
    return state


def _copied(stored: torch.dtype | None, dtype: torch.dtype | None, device: torch.device) -> bool:
    """Whether a tensor stored as `stored` (None: not known yet) is copied rather than used where it lies."""
    return device.type != "cpu" or (dtype or stored) != torch.float32


def _stored_dtype(path: Path | FileWeights) -> torch.dtype | None:
    """The dtype of a safetensors file's weights, read from its header; None for a file already read."""
    if isinstance(path, FileWeights):
        return None
    try:
        with safe_open(path, framework="pt") as f:
            weight = next((n for n in f.keys() if n.endswith(".weight")), None)
            return _SAFETENSORS_DTYPES.get(f.get_slice(weight).get_dtype()) if weight else None
    except (SafetensorError, OSError) as e:
        raise _unreadable_safetensors(path, e) from None


def read_sources(paths: list[Path]) -> list[Path | FileWeights]:
    """Each weights file as read_weights takes it: safetensors by path (mapped as it is read), any other
    file read now by formats.py (a pickle or llm.c's file, whose own shape may be needed first)."""
    return [p if p.suffix == ".safetensors" else read_file(p) for p in paths]


def _read_tensors(
    path: Path | FileWeights, *, one_mapping_per_tensor: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(path, FileWeights):
        yield from path.tensors.items()
        return
    try:
        if not one_mapping_per_tensor:  # zero-copy: the tensors are views of one mapping of the file
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
            return
        for name in _safetensors_names(path):
            with safe_open(path, framework="pt") as f:  # unmapped again once the caller has converted the tensor
                yield name, f.get_tensor(name)
    except (SafetensorError, OSError) as e:
        raise _unreadable_safetensors(path, e) from None


def stored_blocks(sources: list[Path | FileWeights]) -> int:
    """How many transformer blocks the files hold: one more than the highest h.{i} of their tensors' names
    (read from the headers alone, so that a config is checked before its model is built)."""
    highest = -1
    for source in sources:
        for name in source.tensors if isinstance(source, FileWeights) else _safetensors_names(source):
            if block := _BLOCK.search(name):
                highest = max(highest, int(block.group(1)))
    return highest + 1


def _safetensors_names(path: Path) -> list[str]:
    try:
        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError) as e:
        raise _unreadable_safetensors(path, e) from None


def _unreadable_safetensors(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable safetensors file ({first_line(error)}); download it again")


def _minigpt2_name(name: str, tied: bool) -> str | None:
    """Official files have no prefix, save_pretrained's have "transformer."; both map to ours."""
    name = name.removeprefix("transformer.")
    if (tied and name == "lm_head.weight") or _BUFFER.fullmatch(name):
        return None  # a tied head is wte, and the mask is computed, not stored
    return name
