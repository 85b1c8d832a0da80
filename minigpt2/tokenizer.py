"""GPT-2's byte-level BPE, run by tiktoken, built from a checkpoint's own vocab.json + merges.txt.

tiktoken's built-in "gpt2" encoding downloads its files at run time; building the encoding
from the checkpoint's files instead makes the tokenizer work from the same cache, offline.
"""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import tiktoken
import torch

from .checkpoint import CheckpointError, find_file

# GPT-2's pre-tokenizer: contractions, letters, numbers, other symbols, whitespace.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class Tokenizer:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], eos_token: str = "<|endoftext|>"):
        """vocab: vocab.json's token -> id; merges: merges.txt's (left, right) pairs, in priority order."""
        byte_of = _byte_decoder()

        def to_bytes(token: str) -> bytes | None:
            return bytes(byte_of[c] for c in token) if all(c in byte_of for c in token) else None

        # BPE only ever produces single bytes and the results of merges; any other vocabulary
        # entry (<|endoftext|>) is a special token, matched literally in text.
        merged = [to_bytes(left + right) for left, right in merges]
        mergeable = {bytes([b]) for b in range(256)} | set(merged)
        ranks, special = {}, {}
        for token, i in vocab.items():
            as_bytes = to_bytes(token)
            if as_bytes in mergeable:
                ranks[as_bytes] = i
            else:
                special[token] = i
        if len(ranks) != len(mergeable):
            raise CheckpointError(
                "vocab.json lacks tokens that merges.txt produces; the two files do not belong together"
            )
        # tiktoken merges the pair whose result has the lowest id, GPT-2 the earliest merge: the
        # same thing when merged tokens are numbered in merge order, as GPT-2 vocabularies are.
        merged_ids = [ranks[b] for b in merged]
        if any(a >= b for a, b in itertools.pairwise(merged_ids)):
            raise CheckpointError(
                "vocab.json does not number merged tokens in merges.txt's order; not a GPT-2 vocabulary"
            )
        self._encoding = tiktoken.Encoding(
            "minigpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=special
        )
        self.eos_token_id: int | None = vocab.get(eos_token)
        self.vocab_size = len(vocab)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, revision: str | None = None) -> Tokenizer:
        """The tokenizer of a checkpoint: an official name, a hub repo, or a local path."""
        vocab_path = find_file(name_or_path, "vocab.json", revision, required=True)
        merges_path = find_file(name_or_path, "merges.txt", revision, required=True)
        return cls.from_files(vocab_path, merges_path)

    @classmethod
    def from_files(cls, vocab_path: Path, merges_path: Path) -> Tokenizer:
        try:
            vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
            lines = Path(merges_path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"cannot read the tokenizer files {vocab_path}, {merges_path}: {e}") from None
        merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
        if not isinstance(vocab, dict) or any(len(pair) != 2 for pair in merges):
            raise CheckpointError(f"{vocab_path} and {merges_path} are not a GPT-2 vocabulary and merges list")
        return cls(vocab, merges)

    def encode(self, text: str) -> list[int]:
        """Token ids of text; "<|endoftext|>" in the text is the special token, as in transformers."""
        return self._encoding.encode(text, allowed_special="all")

    def encode_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Several texts as one left-padded batch: (input_ids [B, T], attention_mask [B, T]).

        Padding is the eos token (GPT-2 has no pad token) with mask 0, on the left, so every row's
        next token follows its last real one. An empty text becomes the eos token alone, which is
        how GPT-2 starts from nothing.
        """
        if isinstance(texts, str) or not texts:
            raise ValueError("encode_batch takes a non-empty list of texts; use encode() for one text")
        if self.eos_token_id is None:
            raise ValueError("this vocabulary has no <|endoftext|> token to pad or start with")
        rows = [self.encode(text) or [self.eos_token_id] for text in texts]
        T = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), T), self.eos_token_id, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, T - len(row) :] = torch.tensor(row)
            attention_mask[i, T - len(row) :] = 1
        return input_ids, attention_mask

    def decode(self, ids) -> str:
        """Text of token ids; bytes that do not form valid UTF-8 (a character cut in two) become U+FFFD."""
        return self._bytes(ids).decode("utf-8", errors="replace")

    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]:
        """Text of token ids as they arrive, piece by piece, for printing while generating.

        A character whose bytes are split across tokens comes out whole, once its last byte has
        arrived; the pieces joined equal decode() of all the ids.
        """
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for i in ids:
            piece = decoder.decode(self._bytes([i]))
            if piece:
                yield piece
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def _bytes(self, ids) -> bytes:
        try:
            return self._encoding.decode_bytes([int(i) for i in ids])
        except (KeyError, OverflowError):
            unknown = [int(i) for i in ids if not 0 <= int(i) < self.vocab_size]
            raise ValueError(f"token ids {unknown[:5]} are not in this vocabulary (0..{self.vocab_size - 1})") from None


def _byte_decoder() -> dict[str, int]:
    """GPT-2 writes every byte of a token as a printable character; this maps each back to its byte.

    Printable Latin-1 bytes stand for themselves; the rest (controls, space, ...) are moved to
    chr(256), chr(257), ... in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    byte_of = {chr(b): b for b in printable}
    others = (b for b in range(256) if b not in printable)
    byte_of.update((chr(256 + n), b) for n, b in enumerate(others))
    return byte_of
