"""The tokenizer of a checkpoint, as transformers reads it: text to token ids and back.

GPT-2's byte-level BPE (vocab.json + merges.txt, or a tokenizer.json that holds the same) runs on
tiktoken (byte_level.py); any other tokenizer.json runs on the tokenizers library
(hf_tokenizers.py). files.py reads what the checkpoint says about added and special tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ..checkpoint import Checkpoint, CheckpointError, first_line, resolve
from .byte_level import ByteLevelBPE
from .files import (
    GPT2_DEFAULTS,
    ROLES,
    AddedToken,
    TokenizerFiles,
    check_vocab,
    read_tokenizer_files,
    read_vocab_and_merges,
)
from .hf_tokenizers import TokenizersLibrary

__all__ = ["Tokenizer", "AddedToken"]


class Tokenizer:
    def __init__(self, engine, role_ids: dict[str, int | None], special_ids: set[int]):
        """engine: ByteLevelBPE or TokenizersLibrary; role_ids: "eos_token" -> id (or None), ...;
        special_ids: what decode(..., skip_special_tokens=True) leaves out."""
        self._engine = engine
        self.bos_token_id = role_ids.get("bos_token")
        self.eos_token_id = role_ids.get("eos_token")
        self.pad_token_id = role_ids.get("pad_token")
        self.unk_token_id = role_ids.get("unk_token")
        self.special_ids = frozenset(special_ids)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, revision: str | None = None) -> Tokenizer:
        """The tokenizer of a checkpoint: an official name, a hub repo, or a local path."""
        return cls.from_checkpoint(resolve(name_or_path, revision))

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> Tokenizer:
        """The tokenizer of a resolved checkpoint (minigpt2.checkpoint.resolve)."""
        try:
            return cls.from_tokenizer_files(read_tokenizer_files(checkpoint))
        except CheckpointError:
            raise
        except BaseException as e:
            # Files that parse (JSON, lines) but do not hold a tokenizer, a damaged or hand-edited file, fail
            # in Python, or as a panic of the Rust library that builds it (pyo3's PanicException)
            parsing = (TypeError, KeyError, AttributeError, IndexError, OverflowError, ValueError)
            if not isinstance(e, parsing) and type(e).__name__ != "PanicException":
                raise
            raise CheckpointError(
                f"{checkpoint.source}'s tokenizer files are damaged or not a tokenizer "
                f"({type(e).__name__}: {first_line(e)}); save the tokenizer again with transformers"
            ) from None

    @classmethod
    def from_files(cls, vocab_path: Path, merges_path: Path) -> Tokenizer:
        """GPT-2's tokenizer from a vocab.json and merges.txt alone (special tokens: GPT-2's defaults)."""
        vocab, merges = read_vocab_and_merges(vocab_path, merges_path)
        return cls.from_tokenizer_files(TokenizerFiles(vocab=vocab, merges=merges, roles=dict(GPT2_DEFAULTS)))

    @classmethod
    def from_tokenizer_files(cls, files: TokenizerFiles) -> Tokenizer:
        roles = files.roles
        if files.tokenizer_json is None:
            vocab, merges = files.vocab, files.merges
        else:
            vocab, merges = gpt2_byte_level(files.tokenizer_json) or (None, None)
            if vocab is not None:
                check_vocab(vocab, files.tokenizer_json_path)
        if vocab is not None:
            # Named special tokens are matched in text too (transformers registers them as added tokens).
            added = files.added + [
                AddedToken(token, vocab[token], special=True, normalized=False)
                for token in sorted(set(roles.values()) - {t.content for t in files.added})
                if token in vocab
            ]
            engine = ByteLevelBPE(vocab, merges, added)
        else:
            engine = TokenizersLibrary(files.tokenizer_json_path, files.added, sorted(set(roles.values())))
        role_ids = {}
        for role in ROLES:
            token_id = engine.token_to_id(roles[role]) if role in roles else None
            role_ids[role] = token_id if token_id is not None else files.model_ids.get(role)
        special_ids = {t.id for t in files.added if t.special} | {i for i in role_ids.values() if i is not None}
        return cls(engine, role_ids, special_ids)

    @property
    def kind(self) -> str:
        """ "gpt2-byte-level" (run by tiktoken) or "tokenizers" (any other tokenizer.json, run by that library)."""
        return self._engine.kind

    @property
    def vocab_size(self) -> int:
        return self._engine.vocab_size

    def encode(self, text: str) -> list[int]:
        """Token ids of text; a special token written in it ("<|endoftext|>") is that token, as in transformers."""
        return self._engine.encode(text)

    def encode_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Several texts as one left-padded batch: (input_ids [B, T], attention_mask [B, T]).

        Padding is the pad token (GPT-2 has none, so the eos token) with mask 0, on the left, so every
        row's next token follows its last real one. An empty text becomes the bos token alone (GPT-2's
        is its eos token), which is how GPT-2 starts from nothing.
        """
        if isinstance(texts, str) or not texts:
            raise ValueError("encode_batch takes a non-empty list of texts; use encode() for one text")
        start, pad = self._start_id(), self._pad_id()
        if start is None or pad is None:
            raise ValueError("this tokenizer names no bos, eos or pad token to pad or start with")
        rows = [self.encode(text) or [start] for text in texts]
        T = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, T - len(row) :] = torch.tensor(row)
            attention_mask[i, T - len(row) :] = 1
        return input_ids, attention_mask

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of token ids; bytes that do not form valid UTF-8 (a character cut in two) become U+FFFD.
        skip_special_tokens: leave out eos, pad and the other special tokens, as transformers does."""
        return self._engine.decode(self._ids(ids, skip_special_tokens))

    def decode_stream(
        self, ids: Iterable[int], skip_special_tokens: bool = False, *, after: Iterable[int] = ()
    ) -> Iterator[str]:
        """Text of token ids as they arrive, piece by piece, for printing while generating.

        A character whose bytes are split across tokens comes out whole, once its last byte has
        arrived; the pieces joined equal decode() of all the ids.
        after: ids already shown (the prompt), so that the pieces continue their text: a tokenizer
        that marks word starts ("▁") drops the space before a text's first word, not before a later one.
        """
        pieces = (i for one in ids for i in self._ids([one], skip_special_tokens))
        return self._engine.decode_stream(pieces, self._ids(after, skip_special_tokens))

    # TransformerLens's ways of writing tokens, for the interpretability tools. Like TransformerLens, they
    # put the bos token first by default (prepend_bos=True), so position 0 is a fixed start that heads can
    # rest on; encode(), encode_batch() and generation keep transformers' behaviour and add nothing.

    def to_tokens(self, text: str | list[str], prepend_bos: bool = True, padding_side: str = "right") -> torch.Tensor:
        """Token ids [B, T] of a text or a list of texts (padded with the pad token on padding_side)."""
        texts = [text] if isinstance(text, str) else list(text)
        if prepend_bos and self._start_id() is None:
            raise ValueError("this tokenizer names no bos (or eos) token to put first; pass prepend_bos=False")
        rows = [([self._start_id()] if prepend_bos else []) + self.encode(t) for t in texts]
        if not all(rows):
            raise ValueError("a text with no tokens: give some text, or prepend_bos=True")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        T, pad = max(len(row) for row in rows), self._pad_id()
        padded = [
            [pad] * (T - len(row)) + row if padding_side == "left" else row + [pad] * (T - len(row)) for row in rows
        ]
        return torch.tensor(padded, dtype=torch.long)

    def to_str_tokens(self, tokens, prepend_bos: bool = True):
        """Each token as its own text: of a text (tokenized with to_tokens, so with the bos first by default),
        of ids [T] or [1, T], or of a list of either (a list of lists)."""
        if isinstance(tokens, str):
            tokens = self.to_tokens(tokens, prepend_bos=prepend_bos)[0]
        elif isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], (str, list, tuple, torch.Tensor)):
            return [self.to_str_tokens(item, prepend_bos=prepend_bos) for item in tokens]
        ids = torch.as_tensor(tokens)
        if ids.dim() == 2 and ids.size(0) == 1:
            ids = ids[0]
        if ids.dim() > 1:
            raise ValueError(f"to_str_tokens takes one sequence of ids, [T] or [1, T], got {list(ids.shape)}")
        return [self.decode([i]) for i in ids.reshape(-1).tolist()]

    def to_string(self, tokens) -> str | list[str]:
        """The text of ids [T] (a string) or [B, T] (a list of strings), special tokens included."""
        ids = torch.as_tensor(tokens)
        return [self.decode(row) for row in ids.tolist()] if ids.dim() == 2 else self.decode(ids.reshape(-1).tolist())

    def _start_id(self) -> int | None:
        return self.bos_token_id if self.bos_token_id is not None else self.eos_token_id

    def _pad_id(self) -> int | None:
        return self.pad_token_id if self.pad_token_id is not None else self.eos_token_id

    def _ids(self, ids, skip_special_tokens: bool) -> list[int]:
        """The ids to decode. An id past the vocabulary has no text and is left out, as transformers does:
        a model whose embedding was resized to a round size can emit one."""
        ids = [int(i) for i in ids]
        negative = [i for i in ids if i < 0]
        if negative:
            raise ValueError(f"token ids {negative[:5]} are negative; ids count from 0")
        return [i for i in ids if i < self.vocab_size and not (skip_special_tokens and i in self.special_ids)]


def gpt2_byte_level(tokenizer_json: dict) -> tuple[dict[str, int], list[tuple[str, str]]] | None:
    """(vocab, merges) when the tokenizer.json is GPT-2's byte-level BPE, step for step; else None."""
    model = tokenizer_json.get("model") or {}
    pre = tokenizer_json.get("pre_tokenizer") or {}
    post = tokenizer_json.get("post_processor")
    plain_bpe = (
        model.get("type") == "BPE"
        and not model.get("dropout")
        and not model.get("byte_fallback")
        and not model.get("ignore_merges")
        and not model.get("continuing_subword_prefix")
        and not model.get("end_of_word_suffix")
    )
    gpt2_steps = (
        tokenizer_json.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and not pre.get("add_prefix_space")
        and pre.get("use_regex", True)
        and (tokenizer_json.get("decoder") or {"type": "ByteLevel"}).get("type") == "ByteLevel"
        and (post is None or post.get("type") == "ByteLevel" or _adds_nothing(post))
    )
    if not (plain_bpe and gpt2_steps):
        return None
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    if any(len(pair) != 2 for pair in merges):
        raise CheckpointError("tokenizer.json's merges are not pairs of tokens")
    return model["vocab"], merges


def _adds_nothing(post: dict) -> bool:
    """A TemplateProcessing post-processor that puts no token around a single text."""
    return post.get("type") == "TemplateProcessing" and all("Sequence" in piece for piece in post.get("single", []))
