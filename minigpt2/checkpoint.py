"""Finding a checkpoint, once: an official name, a hub repo (at a revision) or a local path becomes one
Checkpoint, the value that the model, the tokenizer, the export and the parity tool all read from.

A hub name is resolved with one request (the commit a revision points to, and its files); each file is
then fetched into huggingface_hub's standard cache at that commit, the first time it is read, so
HF_HOME, HF_HUB_OFFLINE and earlier downloads behave as everywhere else, and every file comes from the
same snapshot. Without a network, the cached snapshot stands in. A path that exists is read where it is.

A weights file of another layout (a torch.save state dict, nanoGPT's ckpt.pt, llm.c's model file) and a PEFT
LoRA adapter folder borrow a base checkpoint: its config.json and tokenizer (and, for an adapter, its weights).
The base is given (base=, the CLI's --base) or, for an adapter, named by its adapter_config.json.

This module is the bottom of the house: it imports nothing else of minigpt2.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.constants import is_offline_mode
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

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
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")
ADAPTER_CONFIG = "adapter_config.json"  # a PEFT adapter folder
_HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as it is; the message says what is wrong and what to do."""


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A checkpoint's files, found once. Read them through path(); config is config.json, parsed once."""

    source: str  # the name or path as given
    folder: Path  # the local folder, or the hub snapshot's folder in the cache
    files: frozenset[str]  # the file names it has (hub: at that commit; offline: those in the cache)
    config: dict | None  # config.json (None: a folder without one, e.g. a tokenizer alone)
    repo: str | None = None  # hub repo id, None for a local path
    commit: str | None = None  # the commit a hub revision resolved to
    offline: bool = False  # a hub repo read from the cache alone (no network, or HF_HUB_OFFLINE)
    weights_file: Path | None = None  # a weights file named directly, instead of the folder's
    adapter: Path | None = None  # a LoRA adapter folder to merge into these weights (loading/lora.py)

    @property
    def label(self) -> str:
        """The checkpoint in messages: the path, or repo@revision."""
        return self.source if self.repo is None else f"{self.repo}@{self.commit[:12]}"

    def path(self, filename: str) -> Path | None:
        """The file on disk, fetched into the hub cache the first time if need be; None if the checkpoint has none."""
        if filename not in self.files:
            return None
        if self.repo is None or self.offline:
            return self.folder / filename
        try:
            return Path(hf_hub_download(self.repo, filename, revision=self.commit))
        except (HfHubHTTPError, OSError) as e:
            raise CheckpointError(f"could not download {filename} of {self.label}: {first_line(e)}") from None

    def require(self, filename: str, why: str) -> Path:
        found = self.path(filename)
        if found is None:
            raise CheckpointError(f"{self._where(filename)} not found: {why}{self.offline_hint()}")
        return found

    def read_json(self, filename: str):
        """A JSON file of the checkpoint, parsed; None if it has none."""
        path = self.path(filename)
        return None if path is None else read_json(path)

    def weight_files(self) -> list[Path]:
        """The weights: one file, or the shards that its *.index.json names (each fetched once)."""
        if self.weights_file is not None:
            found = self.weights_file
        else:
            name = next((name for name in WEIGHT_FILES if name in self.files), None)
            if name is None:
                raise CheckpointError(f"{self.label} has none of {', '.join(WEIGHT_FILES)}{self.offline_hint()}")
            found = self.path(name)
        if not found.name.endswith(".index.json"):
            return [found]
        why = "its shard index names it"
        return [found.parent / s if self.weights_file else self.require(s, why) for s in _shard_names(found)]

    def _where(self, filename: str) -> str:
        return str(self.folder / filename) if self.repo is None else f"{filename} of {self.label}"

    def offline_hint(self) -> str:
        """What to add to a message about a missing file."""
        return " (offline, it may just not be in the local hub cache)" if self.offline else ""


def resolve(name_or_path, revision: str | None = None, *, base=None) -> Checkpoint:
    """The checkpoint that a name or path means, at a revision (hub branch, tag or commit; default main).

    base: the checkpoint (name or path) whose config.json and tokenizer a weights file or a LoRA adapter
    folder borrows; an adapter's own adapter_config.json names one (base_model_name_or_path) otherwise."""
    source = str(name_or_path)
    local = Path(source).expanduser()
    if local.exists():
        if revision is not None:
            raise ValueError(f"revision {revision!r} applies to hub repos, and {source} is a local path")
        if local.is_dir() and (local / ADAPTER_CONFIG).is_file():
            return _adapter(source, local, base)
        if base is not None:
            if not local.is_file():
                raise ValueError(f"a base (--base) is for a weights file or a LoRA adapter; {source} is neither")
            _check_weights_file(local)
            return replace(_base(base, source), weights_file=local)
        return _local(source, local)
    if base is not None:
        raise ValueError(f"a base (--base) is for a local weights file or LoRA adapter, and {source} is not one")
    if source not in OFFICIAL_REPOS and not _HUB_REPO_ID.fullmatch(source):
        raise FileNotFoundError(
            f"{source}: no such file or directory, and not a hub repo id such as 'gpt2-medium' or 'org/name'"
        )
    return _hub(source, OFFICIAL_REPOS.get(source, source), revision)


def _local(source: str, local: Path) -> Checkpoint:
    weights_file = None
    if local.is_file():
        _check_weights_file(local)
        weights_file, local = local, local.parent
    files = frozenset(p.name for p in local.iterdir() if p.is_file())
    config = read_json(local / "config.json", "JSON config") if "config.json" in files else None
    return Checkpoint(source, local, files, config, weights_file=weights_file)


def _check_weights_file(path: Path) -> None:
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise CheckpointError(
            f"{path} is not a weights file; give a .safetensors, .bin, .pt or .pth file, or a checkpoint directory"
        )


def _base(base, of: str) -> Checkpoint:
    """The base checkpoint that `of` borrows, or one line saying it is not there."""
    try:
        checkpoint = resolve(base)
    except (FileNotFoundError, CheckpointError) as e:
        raise CheckpointError(f"the base checkpoint {str(base)!r} of {of} is not there: {first_line(e)}") from None
    if checkpoint.adapter is not None or checkpoint.config is None:
        raise CheckpointError(f"the base {str(base)!r} of {of} is not a checkpoint with a config.json")
    return checkpoint


def _adapter(source: str, folder: Path, base) -> Checkpoint:
    """A PEFT adapter folder: the base checkpoint it adapts, with the adapter to merge at load."""
    adapter_config = read_json(folder / ADAPTER_CONFIG, "adapter config")
    named = adapter_config.get("base_model_name_or_path") if isinstance(adapter_config, dict) else None
    if base is None and not named:
        raise CheckpointError(
            f"{folder / ADAPTER_CONFIG} names no base model (base_model_name_or_path); give the base checkpoint "
            "it adapts: base=BASE (--base BASE)"
        )
    return replace(_base(base or named, source), adapter=folder)


def _hub(source: str, repo: str, revision: str | None) -> Checkpoint:
    at = f"{repo}@{revision}" if revision else repo
    try:
        if is_offline_mode():
            raise LocalEntryNotFoundError("HF_HUB_OFFLINE is set")
        info = HfApi().model_info(repo, revision=revision)  # the one request: the commit and its files
        commit, files, offline = info.sha, frozenset(s.rfilename for s in info.siblings or ()), False
        folder = None
    except RevisionNotFoundError:
        raise CheckpointError(
            f"the hub repo {repo} has no revision {revision!r}; check the branch, tag or commit"
        ) from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise CheckpointError(
            f"{repo!r} is neither a local path nor a model repo on the hub (private or gated repos need "
            "`hf auth login`); check the name"
        ) from None
    except Exception:  # noqa: BLE001 - no network: huggingface_hub raises its HTTP client's own errors then
        folder, offline = _cached_snapshot(repo, revision, at), True
        commit, files = folder.name, frozenset(p.name for p in folder.iterdir() if p.is_file())
    checkpoint = Checkpoint(source, folder or Path(), files, None, repo=repo, commit=commit, offline=offline)
    if "config.json" not in files:
        raise CheckpointError(f"the hub repo {at} has no config.json; is it a GPT-2 checkpoint?")
    config_path = checkpoint.path("config.json")
    folder = config_path.parent  # the snapshot's folder: every other file of this commit lands beside it
    return Checkpoint(
        source, folder, files, read_json(config_path, "JSON config"), repo=repo, commit=commit, offline=offline
    )


def _cached_snapshot(repo: str, revision: str | None, at: str) -> Path:
    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise CheckpointError(
            f"{at} is not in the local hub cache and the hub cannot be reached (no network, or HF_HUB_OFFLINE is "
            "set); connect once to download it, or pass a local checkpoint directory"
        ) from None


def _shard_names(index: Path) -> list[str]:
    """The files a sharded checkpoint's index maps its tensors to, each once, in order."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index} is not a readable shard index: {first_line(e)}") from None
    if not names or any(not isinstance(n, str) or "/" in n or "\\" in n or n.startswith(".") for n in names):
        raise CheckpointError(f"{index} names no shards, or names files outside its own folder")
    return names


def read_json(path: Path, what: str = "JSON"):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable {what}: {first_line(e)}") from None


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
