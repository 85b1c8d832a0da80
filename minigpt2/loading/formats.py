"""Weights files outside transformers' safetensors, read as transformers' own: a state dict saved with
torch.save (pytorch_model.bin, or .pt, .pth, .bin with any name), nanoGPT's ckpt.pt and llm.c's model file.
Each comes out under transformers' names, projections in Conv1D's [in, out], so that weights.py takes it as
it takes a pytorch_model.bin. nanoGPT's and llm.c's files state their own shape (a GPT2Config); a state dict
borrows its checkpoint's (or its base's) config.json.

Pickles are read with torch.load(weights_only=True) only: tensors, numbers, strings and containers, never
code. A pickle that needs code is refused in one line, and a whole pickled model (torch.save(model)) with
the one-line fix.

nanoGPT (model.py, train.py): {"model": state dict, "model_args": {n_layer, n_head, n_embd, block_size,
bias, vocab_size, dropout}, "optimizer": ..., ...}. Keys are transformers' ("transformer.h.0.attn.c_attn
.weight"), behind "_orig_mod." when torch.compile wrapped the model; nn.Linear's [out, in]; lm_head tied to
wte; exact GELU (nn.GELU); LayerNorm eps 1e-5. bias=False drops every Linear and LayerNorm bias: they are
read as zeros, which add nothing (x + 0 == x exactly), so the model stays GPT-2's. The vocabulary is kept
as trained (50304, padded from 50257): the pad rows have logits, as in nanoGPT.

llm.c (train_gpt2.py, write_model): 256 int32 of header (magic 20240326, version 3 fp32 or 5 bf16, maxT, V,
L, H, C, Vp), then every parameter in write_tensors' order, nn.Linear's [out, in], tanh GELU. Its vocabulary
is padded to Vp with zero rows "for efficiency in C"; llm.c computes over the V real ones only, so the pad
rows are dropped (their zero logits would outrank GPT-2's negative ones).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from math import prod
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, first_line
from ..config import GPT2Config

GPT2_EOS = 50256  # <|endoftext|>, the last of GPT-2's 50257 tokens
LLMC_MAGIC = 20240326
LLMC_DTYPES = {3: torch.float32, 5: torch.bfloat16}
LLMC_HEADER_BYTES = 256 * 4
LINEAR_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Every weight whose bias nanoGPT leaves out with bias=False (Linears and LayerNorms; not wte, wpe, lm_head).
_BIASED = re.compile(
    r"(transformer\.)?(h\.\d+\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)|ln_f)\.weight"
)
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


@dataclass(frozen=True, eq=False)
class FileWeights:
    """A weights file, read: its tensors (transformers' names, Conv1D's [in, out]) and the shape it states."""

    path: Path
    tensors: dict[str, torch.Tensor]
    config: GPT2Config | None = None  # the shape the file states; None: the config.json's
    stated_by: str | None = None  # where in the file: "nanoGPT's model_args", "llm.c's header"


def read_file(path: Path) -> FileWeights:
    """A torch.save file (a state dict, nanoGPT's ckpt.pt) or llm.c's model file."""
    with path.open("rb") as f:
        head = f.read(4)
    if int.from_bytes(head, "little") == LLMC_MAGIC:
        return _llmc(path)
    loaded = load_pickle(path)
    if isinstance(loaded, dict) and "model_args" in loaded and "model" in loaded:
        return _nanogpt(path, loaded)
    return FileWeights(path, _tensors(path, loaded))


def load_pickle(path: Path):
    """A torch.save file's contents, read with weights_only=True, or one line saying why not."""
    try:
        return _torch_load(path)
    except Exception as e:  # a damaged zip or pickle fails in any of a dozen ways: each is an unreadable file
        if _pickled_module(path):
            raise CheckpointError(
                f"{path} is not a readable PyTorch weights file: it is a whole pickled model (torch.save(model)), "
                "which only its class's code can rebuild, and minigpt2 runs no pickle's code; save the weights "
                f"alone instead: torch.save(model.state_dict(), {path.name!r})"
            ) from None
        needs = _UNSUPPORTED_GLOBAL.search(str(e))
        why = (
            f"its pickle calls {needs.group(1)}, code that minigpt2 never runs (it reads tensors only)"
            if needs
            else first_line(e)
        )
        raise CheckpointError(f"{path} is not a readable PyTorch weights file: {why}") from None


def _torch_load(path: Path):
    """Memory-mapped where the file's format allows it (torch >= 1.6 wrote such files)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _pickled_module(path: Path) -> bool:
    """Whether the file pickles an nn.Module: its pickle then holds a module's own attributes. Read as
    bytes, not unpickled."""
    try:
        with zipfile.ZipFile(path) as z:
            data = next((z.read(n) for n in z.namelist() if n.endswith("/data.pkl")), b"")
    except (zipfile.BadZipFile, OSError):
        return False
    return b"_modules" in data and b"_parameters" in data


def _tensors(path: Path, state, what: str = "") -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}{what}, not a dictionary of tensors")
    not_tensors = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if not_tensors:
        inside = [k for k in ("state_dict", "model") if isinstance(state.get(k), dict)]
        hint = (
            f" (a training checkpoint? its weights seem to be under {inside[0]!r}; save them alone: "
            "torch.save(model.state_dict(), PATH))"
            if inside
            else ""
        )
        raise CheckpointError(f"{path}{what} holds {not_tensors[0]!r}, which is not a tensor{hint}")
    return state


def _nanogpt(path: Path, checkpoint: dict) -> FileWeights:
    args = checkpoint["model_args"]
    where = f"{path}: nanoGPT's model_args"
    try:
        vocab = int(args["vocab_size"])
        config = GPT2Config(
            vocab_size=vocab,
            n_positions=int(args["block_size"]),
            n_embd=int(args["n_embd"]),
            n_layer=int(args["n_layer"]),
            n_head=int(args["n_head"]),
            activation_function="gelu",  # nn.GELU: exact, not GPT-2's tanh approximation
            eos_token_id=GPT2_EOS if vocab > GPT2_EOS else None,
            **dict.fromkeys(("embd_pdrop", "attn_pdrop", "resid_pdrop"), float(args.get("dropout", 0.0))),
        )
        bias = bool(args["bias"])
    except KeyError as e:
        raise CheckpointError(f"{where} lack {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} have an invalid value: {first_line(e)}") from None
    state = {k.removeprefix("_orig_mod."): v for k, v in _tensors(path, checkpoint["model"], "'s model").items()}
    if not bias:  # zeros where nanoGPT has no bias: exact, and GPT-2's model as it is
        for name, weight in list(state.items()):
            bias_name = name.removesuffix("weight") + "bias"
            if _BIASED.fullmatch(name) and bias_name not in state:
                state[bias_name] = torch.zeros(weight.shape[0], dtype=weight.dtype)
    tensors = {k: v.t() if k.endswith(LINEAR_WEIGHTS) and v.dim() == 2 else v for k, v in state.items()}
    return FileWeights(path, tensors, config, "nanoGPT's model_args")


def _llmc(path: Path) -> FileWeights:
    with path.open("rb") as f:
        header = torch.frombuffer(bytearray(f.read(LLMC_HEADER_BYTES)), dtype=torch.int32)
    _, version, max_t, V, L, H, C, Vp = header[:8].tolist()
    if version not in LLMC_DTYPES:
        raise CheckpointError(
            f"{path} is an llm.c model file of version {version}; minigpt2 reads versions 3 (fp32) and 5 (bf16), "
            "what llm.c's train_gpt2.py writes"
        )
    try:
        config = GPT2Config(
            vocab_size=V,
            n_positions=max_t,
            n_embd=C,
            n_layer=L,
            n_head=H,
            eos_token_id=GPT2_EOS if V > GPT2_EOS else None,
        )
    except ValueError as e:
        raise CheckpointError(f"{path}: llm.c's header states an impossible shape: {first_line(e)}") from None
    dtype = LLMC_DTYPES[version]
    layout = list(_llmc_layout(max_t, L, C, Vp))
    size, element = path.stat().st_size, dtype.itemsize
    expected = LLMC_HEADER_BYTES + sum(prod(shape) for _, shape in layout) * element
    if size != expected or Vp < V:
        raise CheckpointError(
            f"{path} has {size} bytes, but an llm.c model of the shape its header states (L={L}, C={C}, V={V}, "
            f"Vp={Vp}, maxT={max_t}, {dtype}) has {expected}; the file is cut short or not llm.c's"
        )
    flat = torch.from_file(str(path), shared=False, size=size // element, dtype=dtype)  # mapped, not read
    tensors, offset = {}, LLMC_HEADER_BYTES // element
    for name, shape in layout:
        tensor = flat[offset : offset + prod(shape)].view(shape)
        offset += prod(shape)
        tensors[name] = tensor.t() if name.endswith(LINEAR_WEIGHTS) else tensor
    tensors["wte.weight"] = tensors["wte.weight"][:V]  # the zero pad rows, dropped
    return FileWeights(path, tensors, config, "llm.c's header")


def _llmc_layout(max_t: int, L: int, C: int, Vp: int):
    """(name, shape) of each parameter, in the order llm.c writes them: each kind for every layer in turn."""
    yield "wte.weight", (Vp, C)
    yield "wpe.weight", (max_t, C)
    per_layer = (
        ("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
        ("attn.c_attn.weight", (3 * C, C)), ("attn.c_attn.bias", (3 * C,)),
        ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
        ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
        ("mlp.c_fc.weight", (4 * C, C)), ("mlp.c_fc.bias", (4 * C,)),
        ("mlp.c_proj.weight", (C, 4 * C)), ("mlp.c_proj.bias", (C,)),
    )  # fmt: skip
    for suffix, shape in per_layer:
        for i in range(L):
            yield f"h.{i}.{suffix}", shape
    yield "ln_f.weight", (C,)
    yield "ln_f.bias", (C,)
