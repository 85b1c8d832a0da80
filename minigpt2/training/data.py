"""Training data: text tokenized once into a memory-mapped token file (as nanoGPT's prepare.py writes it),
llm.c's headered token shards, a character vocabulary for toy models (nanoGPT's shakespeare_char), JSONL of
{prompt, completion} for instruction tuning, and the batches drawn from them.

    DATA                       what it is read as
    notes.txt                  one document
    corpus/ (*.txt, *.jsonl)   every .txt a document, every JSONL line's "text" a document, sorted by path
    *.bin, or a folder of them llm.c's shards (fineweb_train_000001.bin ...; "val" in a name: the val split)
    hf:NAME                    a Hugging Face data set (the datasets library): every row's text field a
                               document; NAME a hub id, a local folder of data files, or a save_to_disk folder

Text is tokenized once, with the end-of-text token between documents, into
<DATA>.minigpt2-cache/<key>/tokens.bin beside the data (uint16, or uint32 past 65536 tokens), where key
hashes the files' contents and the tokenizer's: later runs, and resumes, read the tokens where they lie.
Beside read-only data, the cache is the user's: ~/.cache/minigpt2/tokens/<key>/.
A data set's tokens go under the datasets cache instead, HF_DATASETS_CACHE/minigpt2-tokens/<key>/, where
key hashes its name, configuration, split, text field and fingerprint (which changes with its content).
A batch is (input_ids, labels) [B, T] with labels in transformers' convention: the model shifts them
(position t predicts labels[t + 1]), and -100 is not counted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..writing import write_atomically

CACHE_SUFFIX = ".minigpt2-cache"
EOT = "<|endoftext|>"
LLMC_MAGIC, LLMC_VERSION, LLMC_HEADER_BYTES = 20240520, 1, 256 * 4  # llm.c's dev/data/data_common.py
IGNORE = -100  # a label that is not counted
HUB_PREFIX = "hf:"


class CharVocab:
    """Every character of the data, sorted (nanoGPT's shakespeare_char), and an end-of-text token after them.
    Saved as a tokenizer.json (a WordLevel model over single characters) that minigpt2's Tokenizer and
    transformers' PreTrainedTokenizerFast both read."""

    def __init__(self, chars: str):
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}
        self.eos_token_id = len(chars)
        self.vocab_size = len(chars) + 1
        self.bos_token_id = self.pad_token_id = None  # as GPT-2: the end-of-text token starts and pads

    @classmethod
    def from_data(cls, source: Path | HubData) -> CharVocab:
        seen = set()
        for _, text in documents(source):
            seen.update(text)
        return cls("".join(sorted(seen)))

    @property
    def fingerprint(self) -> str:
        return "char:" + hashlib.sha256(self.chars.encode("utf-8", "surrogatepass")).hexdigest()

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as e:
            raise ValueError(f"the character {e.args[0]!r} is not in the vocabulary built from the data") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] if i < len(self.chars) else EOT for i in ids)

    def save(self, folder: Path) -> None:
        """tokenizer.json and tokenizer_config.json into folder."""
        from tokenizers import Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as Library

        vocab = {**self._ids, EOT: self.eos_token_id}
        library = Library(models.WordLevel(vocab, unk_token=EOT))
        library.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one char a token
        library.decoder = decoders.Fuse()  # joined with nothing between them
        library.add_special_tokens([EOT])
        library.save(str(folder / "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> CharVocab | None:
        """The vocabulary saved in folder by save(); None if its tokenizer is not a character vocabulary."""
        path = Path(folder) / "tokenizer.json"
        model = json.loads(path.read_text(encoding="utf-8")).get("model", {}) if path.is_file() else {}
        vocab = model.get("vocab") if model.get("type") == "WordLevel" else None
        if not vocab or vocab.get(EOT) != len(vocab) - 1:
            return None
        return cls("".join(sorted((c for c in vocab if c != EOT), key=vocab.__getitem__)))


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
            f.write(bytes(torch.tensor(ids, dtype=torch.int64).to(dtype).untyped_storage()))


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


class Windows:
    """Random windows of block_size tokens from the train segments, at offsets drawn from a seeded generator
    (nanoGPT's get_batch). state_dict() is the data position: the generator's state."""

    def __init__(self, segments: list[torch.Tensor], block_size: int, batch_size: int, seed: int):
        self.segments = [s for s in segments if len(s) >= block_size]
        self.block_size, self.batch_size = block_size, batch_size
        self.ends = torch.tensor([len(s) - block_size + 1 for s in self.segments]).cumsum(0)  # windows so far
        self.generator = torch.Generator().manual_seed(seed)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.at(torch.randint(int(self.ends[-1]), (self.batch_size,), generator=self.generator))

    def at(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows at these global offsets (across segments, none crossing into the next)."""
        which = torch.searchsorted(self.ends, starts, right=True)
        before = torch.cat([torch.zeros(1, dtype=torch.long), self.ends])[which]
        rows = [self.segments[s][i - b : i - b + self.block_size] for s, i, b in zip(which, starts, before)]
        x = torch.stack(rows).long()
        return x, x

    def fixed(self, batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """batches windows spread evenly over the segments: the same set at every evaluation."""
        starts = torch.linspace(0, int(self.ends[-1]) - 1, batches * self.batch_size).long()
        return [self.at(chunk) for chunk in starts.split(self.batch_size)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


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


class Examples:
    """Random instruction examples, padded on the right (labels -100) to the longest in the batch."""

    def __init__(self, examples, batch_size: int, seed: int, pad_id: int):
        self.examples, self.batch_size, self.pad_id = examples, batch_size, pad_id
        self.generator = torch.Generator().manual_seed(seed)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        picks = torch.randint(len(self.examples), (self.batch_size,), generator=self.generator)
        return self.batch([self.examples[i] for i in picks])

    def batch(self, examples) -> tuple[torch.Tensor, torch.Tensor]:
        # Right padding needs no attention mask: a causal model's real tokens never see what comes after them.
        T = max(len(ids) for ids, _ in examples)
        x = torch.full((len(examples), T), self.pad_id, dtype=torch.long)
        y = torch.full((len(examples), T), IGNORE, dtype=torch.long)
        for row, (ids, labels) in enumerate(examples):
            x[row, : len(ids)], y[row, : len(labels)] = torch.tensor(ids), torch.tensor(labels)
        return x, y

    def fixed(self, batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        chosen = self.examples[: batches * self.batch_size]
        return [self.batch(chosen[i : i + self.batch_size]) for i in range(0, len(chosen), self.batch_size)]

    state_dict, load_state_dict = Windows.state_dict, Windows.load_state_dict
