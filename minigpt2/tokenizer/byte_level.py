"""GPT-2's byte-level BPE, run by tiktoken, with a checkpoint's added tokens matched around it.

tiktoken's built-in "gpt2" encoding downloads its files at run time; building the encoding
from the checkpoint's own vocabulary and merges makes it work from the same cache, offline,
and for any vocabulary trained the GPT-2 way.

Added tokens (<|endoftext|>, a fine-tune's <|pad|> or chat tokens) are cut out of the text first,
as the tokenizers library does; the text between them goes through BPE.
"""

from __future__ import annotations

import codecs
import itertools
import re
from collections.abc import Iterable, Iterator

import tiktoken

from ..checkpoint import CheckpointError
from .files import AddedToken

# GPT-2's pre-tokenizer: contractions, letters, numbers, other symbols, whitespace.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class ByteLevelBPE:
    kind = "gpt2-byte-level"

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], added: list[AddedToken]):
        """vocab: token -> id; merges: (left, right) pairs in priority order; added: tokens matched whole."""
        byte_of = _byte_decoder()

        def to_bytes(token: str) -> bytes | None:
            return bytes(byte_of[c] for c in token) if all(c in byte_of for c in token) else None

        # BPE only ever produces single bytes and the results of merges; any other vocabulary
        # entry (<|endoftext|>) is reached only as an added token.
        merged = [to_bytes(left + right) for left, right in merges]
        mergeable = {bytes([b]) for b in range(256)} | set(merged)
        ranks = {b: i for token, i in vocab.items() if (b := to_bytes(token)) in mergeable}
        if len(ranks) != len(mergeable):
            raise CheckpointError("the vocabulary lacks tokens that the merges produce; the two do not belong together")
        # tiktoken merges the pair whose result has the lowest id, GPT-2 the earliest merge: the
        # same thing when merged tokens are numbered in merge order, as GPT-2 vocabularies are.
        merged_ids = [ranks[b] for b in merged]
        if any(a >= b for a, b in itertools.pairwise(merged_ids)):
            raise CheckpointError("the vocabulary does not number merged tokens in the merges' order; not GPT-2's")
        self._encoding = tiktoken.Encoding("minigpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
        # Decoding maps each id to its bytes; a token whose characters are not all byte symbols
        # (an added "<|user|>", say) stands for its own UTF-8, as tokenizers' ByteLevel decoder has it.
        strings = {**vocab, **{t.content: t.id for t in added}}
        self._bytes_of = {i: to_bytes(token) or token.encode() for token, i in strings.items()}
        self._added = AddedTokenMatcher(added)
        self.vocab_size = max(self._bytes_of) + 1
        self._ids = strings

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece, token_id in self._added.split(text):
            ids += [token_id] if token_id is not None else self._encoding.encode_ordinary(piece)
        return ids

    def decode(self, ids: list[int]) -> str:
        return self._bytes(ids).decode("utf-8", errors="replace")

    def decode_stream(self, ids: Iterable[int], after: list[int]) -> Iterator[str]:
        """after: ids shown before; bytes decode the same whatever came before them, so it is unused."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for i in ids:
            if piece := decoder.decode(self._bytes([i])):
                yield piece
        if tail := decoder.decode(b"", final=True):
            yield tail

    def _bytes(self, ids: list[int]) -> bytes:
        return b"".join(self._bytes_of.get(i, b"") for i in ids)  # an id the vocabulary skips has no text


class AddedTokenMatcher:
    """Cuts a text into plain pieces and added tokens, with the rules of tokenizers' AddedVocabulary:
    tokens that are not normalized (the special ones, as a rule) first, then the others in what is
    left; at each place the longest; single_word only between non-word characters; lstrip and rstrip
    take the whitespace on that side into the match."""

    def __init__(self, added: list[AddedToken]):
        self._token = {t.content: t for t in added}
        passes = ([t for t in added if not t.normalized], [t for t in added if t.normalized])
        self._patterns = [_pattern(tokens) for tokens in passes if tokens]

    def split(self, text: str) -> list[tuple[str, int | None]]:
        """[(piece, id)]: id is the added token's, or None for plain text to run BPE on."""
        pieces = [(text, None)]
        for pattern in self._patterns:
            pieces = [cut for piece, i in pieces for cut in (self._cut(pattern, piece) if i is None else [(piece, i)])]
        return [(piece, i) for piece, i in pieces if piece or i is not None]

    def _cut(self, pattern: re.Pattern, text: str) -> list[tuple[str, int | None]]:
        out, done = [], 0
        for match in pattern.finditer(text):
            token = self._token[match.group()]
            start, end = match.span()
            if token.lstrip:
                start = done + len(text[done:start].rstrip())
            if token.rstrip:
                end = len(text) - len(text[end:].lstrip())
            out += [(text[done:start], None), (text[start:end], token.id)]
            done = end
        return [*out, (text[done:], None)]


def _pattern(tokens: list[AddedToken]) -> re.Pattern:
    """One regex for the tokens, the longest first: at the leftmost place, the longest token matches."""
    alternatives = []
    for t in sorted(tokens, key=lambda t: len(t.content), reverse=True):
        body = re.escape(t.content)
        alternatives.append(rf"(?<!\w){body}(?!\w)" if t.single_word else body)
    return re.compile("|".join(alternatives))


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
