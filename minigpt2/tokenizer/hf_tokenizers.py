"""Any tokenizer.json that is not GPT-2's byte-level BPE (the Korean GPT-2's SentencePiece-style BPE,
say), run by the tokenizers library: the maintained engine for that format, which transformers runs too."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import tokenizers

from ..checkpoint import CheckpointError
from .files import AddedToken


class TokenizersLibrary:
    kind = "tokenizers"

    def __init__(self, path: Path, added: list[AddedToken], specials: list[str]):
        """path: the tokenizer.json; added: tokens from the other files; specials: the named special tokens."""
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises its own Exception for anything it cannot build
            raise CheckpointError(f"{path} is a tokenizer.json that the tokenizers library cannot run: {e}") from None
        # What transformers adds to the tokenizer.json's own tokens: those of the other files, and the special ones.
        known = self._tokenizer.get_added_tokens_decoder()
        known_contents = {t.content for t in known.values()}
        extra = [t for t in added if t.id not in known and t.content not in known_contents]
        self._tokenizer.add_tokens(
            [
                tokenizers.AddedToken(
                    t.content,
                    single_word=t.single_word,
                    lstrip=t.lstrip,
                    rstrip=t.rstrip,
                    normalized=t.normalized,
                    special=t.special,
                )
                for t in extra
            ]
        )
        missing = [s for s in specials if s not in known_contents and self._tokenizer.token_to_id(s) is not None]
        self._tokenizer.add_special_tokens(missing)
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids  # with the post-processor's tokens, as transformers' encode()

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def decode_stream(self, ids: Iterable[int], after: list[int]) -> Iterator[str]:
        """The library's own incremental decoder, started after the ids already shown: word boundaries
        ("▁") and characters split across tokens come out right."""
        stream = tokenizers.decoders.DecodeStream(ids=after or None, skip_special_tokens=False)
        for i in ids:
            if piece := stream.step(self._tokenizer, i):
                yield piece
