"""Text tokenized once into a memory-mapped token file, cached by content (as nanoGPT's prepare.py writes it),
llm.c's headered shards read where they lie, and the train/val split of the tokens."""

from __future__ import annotations

import os
import struct
from array import array
from pathlib import Path

import torch

from ...writing import write_atomically
from .sources import HubData, _hash, content_hash, documents

CACHE_SUFFIX = ".minigpt2-cache"
ARRAY_CODES = {torch.uint16: "H", torch.uint32: "I"}  # the stdlib array's unsigned 16- and 32-bit codes
LLMC_MAGIC, LLMC_VERSION, LLMC_HEADER_BYTES = 20240520, 1, 256 * 4  # llm.c's dev/data/data_common.py


def token_streams(path, tokenizer, fingerprint: str) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, str]:
    """(train segments, val segments or None, key): memory-mapped token tensors. llm.c's shards are read as
    they are (val: the shards with "val" in their name, if any); text is tokenized once into the cache."""
    if isinstance(path, HubData):
        key = _hash(f"{path.content_hash}\n{fingerprint}")
        return [_cached_tokens(path, path.cache_root / key, tokenizer)], None, key
    path = Path(path)
    shards = sorted(path.glob("*.bin")) if path.is_dir() else [path] if path.suffix == ".bin" else []
    if shards:
        val = [s for s in shards if "val" in s.name]
        train = [s for s in shards if s not in val]
        if not train:
            raise ValueError(f"{path} has only val shards; give the train shards too")
        key = "llmc:" + ",".join(s.name for s in shards)
        return [read_llmc_shard(s) for s in train], [read_llmc_shard(s) for s in val] or None, key
    key = _hash(f"{content_hash(path)}\n{fingerprint}")
    return [_cached_tokens(path, _cache_beside(path) / key, tokenizer)], None, key


def _cache_beside(path: Path) -> Path:
    """DATA.minigpt2-cache beside the data; where its folder is read-only, the user's cache:
    $XDG_CACHE_HOME (or ~/.cache)/minigpt2/tokens (the key still names the content)."""
    if os.access(path.parent, os.W_OK):
        return path.with_name(path.name + CACHE_SUFFIX)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minigpt2" / "tokens"


def _cached_tokens(source: Path | HubData, folder: Path, tokenizer) -> torch.Tensor:
    """The data's tokens, memory-mapped from folder/tokens.bin, written there first if they are not yet."""
    dtype = torch.uint16 if tokenizer.vocab_size <= 1 << 16 else torch.uint32
    if not (folder / "tokens.bin").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / "tokens.bin", lambda partial: _write_tokens(partial, source, tokenizer, dtype))
    count = (folder / "tokens.bin").stat().st_size // dtype.itemsize
    return torch.from_file(str(folder / "tokens.bin"), shared=False, size=count, dtype=dtype)


def _write_tokens(partial: Path, source: Path | HubData, tokenizer, dtype) -> None:
    """Each document's tokens, written as they are made, with the end-of-text token between documents."""
    with open(partial, "wb") as f:
        for i, (_, text) in enumerate(documents(source)):
            ids = tokenizer.encode(text)
            if i:
                if tokenizer.eos_token_id is None:
                    raise ValueError("the tokenizer names no end-of-text token to put between documents")
                ids = [tokenizer.eos_token_id, *ids]
            array(ARRAY_CODES[dtype], ids).tofile(f)  # native byte order, as torch.from_file reads it


def read_llmc_shard(path: Path) -> torch.Tensor:
    """llm.c's token shard: 256 int32 (magic, version, token count, ...), then the tokens as uint16."""
    with open(path, "rb") as f:
        header = f.read(LLMC_HEADER_BYTES)
    magic, version, count = struct.unpack("<3i", header[:12]) if len(header) == LLMC_HEADER_BYTES else (0, 0, 0)
    if magic != LLMC_MAGIC:
        raise ValueError(f"{path} is not one of llm.c's token shards (no magic {LLMC_MAGIC} in its header)")
    if version != LLMC_VERSION or path.stat().st_size != LLMC_HEADER_BYTES + 2 * count:
        raise ValueError(f"{path}: llm.c shard of version {version} with {count} tokens, which its size does not hold")
    skip = LLMC_HEADER_BYTES // 2
    return torch.from_file(str(path), shared=False, size=skip + count, dtype=torch.uint16)[skip:]


def split(segments: list[torch.Tensor], fraction: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The last `fraction` of the tokens as the val split, the rest as train (nanoGPT's 0.9/0.1), as views."""
    total = sum(len(s) for s in segments)
    cut, train, val = total - int(total * fraction), [], []
    for s in segments:
        at = min(max(cut, 0), len(s))
        train += [s[:at]] if at else []
        val += [s[at:]] if at < len(s) else []
        cut -= len(s)
    return train, val


def check_fits(segments: list[torch.Tensor], block_size: int, what: str) -> None:
    longest = max((len(s) for s in segments), default=0)
    if longest < block_size:
        raise ValueError(
            f"the {what} split has {longest} tokens, fewer than one block ({block_size}); give more text, "
            f"a smaller --block-size{', or a larger --val-fraction' if what == 'val' else ''}"
        )
