"""Where training text comes from: a text file, a folder of .txt/.jsonl, a Hugging Face data set (hf:NAME), or
JSONL of {prompt, completion}; each read as (name, text) documents, with one-line errors for what is not text."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .batches import IGNORE

HUB_PREFIX = "hf:"


def source(data: str, config: str | None = None, split: str = "train", text_field: str = "text"):
    """DATA as the readers take it: a resolved Path, or for hf:NAME a HubData (a local NAME resolved)."""
    if not data.startswith(HUB_PREFIX):
        return Path(data).resolve()
    name = data[len(HUB_PREFIX) :]
    if not name:
        raise ValueError("hf: needs a data set's name, as hf:roneneldan/TinyStories, or a local folder")
    local = Path(name).expanduser()
    return HubData(str(local.resolve()) if local.exists() else name, config, split, text_field)


@dataclass(frozen=True)
class HubData:
    """A split of a Hugging Face data set: datasets.load_dataset(name, config, split=split), or load_from_disk
    for a folder that save_to_disk wrote; every row's text_field is a document."""

    name: str
    config: str | None = None
    split: str = "train"
    text_field: str = "text"

    def __str__(self) -> str:
        return HUB_PREFIX + self.name

    @functools.cached_property
    def dataset(self):
        try:
            import datasets
        except ImportError:
            raise ImportError(f'{self} is read with the datasets library: pip install -e ".[train]"') from None
        folder = Path(self.name)
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():  # save_to_disk's
            found = datasets.load_from_disk(self.name)
            if isinstance(found, datasets.DatasetDict):
                if self.split not in found:
                    raise ValueError(f"{self} has no split {self.split!r}; give --dataset-split {' or '.join(found)}")
                found = found[self.split]
        else:
            found = datasets.load_dataset(self.name, self.config, split=self.split)
        if self.text_field not in found.column_names:
            raise ValueError(
                f"{self} has no {self.text_field!r} column; give --text-field {' or '.join(found.column_names)}"
            )
        return found

    @property
    def content_hash(self) -> str:
        """What is read, and the data set's fingerprint: which content it was (a new revision, a new one)."""
        what = (self.name, self.config, self.split, self.text_field, self.dataset._fingerprint)
        return _hash("\n".join(map(str, what)))

    @property
    def cache_root(self) -> Path:
        import datasets

        return Path(datasets.config.HF_DATASETS_CACHE) / "minigpt2-tokens"

    def documents(self):
        rows = self.dataset.select_columns([self.text_field]).iter(batch_size=1000)
        for i, text in enumerate(text for batch in rows for text in batch[self.text_field]):
            if not isinstance(text, str):
                raise ValueError(
                    f"{self}: row {i}'s {self.text_field!r} is not text; give a text column's --text-field"
                )
            yield f"{self}[{i}]", text


def documents(source: Path | HubData):
    """(name, text) of every document of the data, in order."""
    return source.documents() if isinstance(source, HubData) else read_documents(source)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_documents(path: Path):
    """(name, text) of every document of a text file or a folder of .txt/.jsonl, in order."""
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
        if path.is_dir()
        else [path]
    )
    if not files:
        raise ValueError(f"{path} holds no .txt or .jsonl file; give a text file or a folder of them")
    for file in files:
        text = read_text(file)
        if file.suffix != ".jsonl":
            yield str(file), text
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                record = _json_line(file, n, line)
                if not isinstance(record.get("text"), str):
                    raise ValueError(f'{file}:{n}: a text JSONL line needs a "text" string; give {{"text": "..."}}')
                yield f"{file}:{n}", record["text"]


def read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start} cannot be decoded); give a text file") from None
    if "\0" in text:
        raise ValueError(f"{path} is binary (byte {text.index(chr(0))} is NUL), not text; give a text file")
    if not text.strip():
        raise ValueError(f"{path} is empty; give a text to train on")
    return text


def _json_line(file: Path, n: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}:{n} is not a JSON line: {e}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{file}:{n} is not a JSON object")  # noqa: TRY004 - bad data, one line from the command
    return record


def content_hash(path: Path) -> str:
    """sha256 of the data's files: their names (relative to DATA) and bytes."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        if path.is_dir() and file.suffix not in (".txt", ".jsonl"):
            continue
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def read_instructions(path: Path, tokenizer, block_size: int) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) of every {prompt, completion} line: the prompt, the completion and the end-of-text token,
    cut to block_size; the prompt's labels are -100, so only the completion is learned."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".jsonl":
        raise ValueError(f"{path}: instruction data is one JSONL file of {{prompt, completion}} lines")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer names no end-of-text token to end each completion with")
    examples = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        record = _json_line(path, n, line)
        if not (isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str)):
            raise ValueError(f'{path}:{n}: an instruction line needs "prompt" and "completion" strings')  # noqa: TRY004
        prompt = tokenizer.encode(record["prompt"])
        completion = tokenizer.encode(record["completion"]) + [tokenizer.eos_token_id]
        ids, labels = (prompt + completion)[:block_size], ([IGNORE] * len(prompt) + completion)[:block_size]
        if all(label == IGNORE for label in labels[1:]):  # labels[0] is never predicted
            raise ValueError(
                f"{path}:{n}: the prompt fills the block ({block_size} tokens); shorten it or raise --block-size"
            )
        examples.append((ids, labels))
    return examples
