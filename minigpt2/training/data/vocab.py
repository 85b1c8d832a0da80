"""A character vocabulary for toy models, built from the data (nanoGPT's shakespeare_char)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .sources import HubData, documents

EOT = "<|endoftext|>"


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
