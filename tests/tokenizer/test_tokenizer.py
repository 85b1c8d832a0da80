"""minigpt2/tokenizer/ (byte_level.py: the tiktoken-run byte-level BPE) against transformers' GPT-2 tokenizer,
on a vocabulary trained here: ids for sample and unseen text and, as properties, for any text; decoding,
characters cut between tokens, streaming, left-padded batches, and files that do not belong together.
(Other tokenizer layouts and the tokenizers-library kind: test_tokenizer_files.py.)"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, GPT2Tokenizer, GPT2TokenizerFast

from minigpt2 import CheckpointError, Tokenizer
from minigpt2.testing.checkpoints import SAMPLE_TEXTS

# Text the vocabulary was not trained on, of the kinds that trip tokenizers up.
UNSEEN_TEXTS = [
    "",
    " ",
    "\n",
    "a" * 300,
    "Hello, world! How's it going? I'm fine; they'll come, we've won, you'd see.",
    "한국어 문장과 English가 섞인 text입니다 😀 ㅋㅋㅋ",
    "👨‍👩‍👧‍👦 family, 🧑🏽‍🚀 astronaut, 🫠 melting, ❤️‍🔥",
    "     runs    of  whitespace\t\t\tand\n\n\n\nnewlines \r\n end   ",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // C\nSELECT * FROM t WHERE x <> 'y';",
    "x<|endoftext|>y <|endoftext|> <|endoftext",
    "Ünïcödé ñ 中文 العربية עברית हिन्दी ไทย Ελληνικά кириллица",
    "\u200b\u200d\ufeff zero-width, \x00\x01\x7f controls, \U0001f600 astral",
    "12345678901234567890 3.14e-10 0x1F 1_000",
]


@pytest.fixture(scope="module")
def ours(tiny):
    """The session-wide tiny model's tokenizer."""
    return tiny[1]


@pytest.fixture(scope="module", params=["GPT2Tokenizer", "AutoTokenizer"])
def reference_tokenizer(tiny_checkpoint, request):
    cls = {"GPT2Tokenizer": GPT2Tokenizer, "AutoTokenizer": AutoTokenizer}[request.param]
    return cls.from_pretrained(tiny_checkpoint)


@pytest.mark.parametrize("text", SAMPLE_TEXTS + UNSEEN_TEXTS)
def test_ids_match_transformers(ours, reference_tokenizer, text):
    assert ours.encode(text) == reference_tokenizer.encode(text)


@pytest.mark.parametrize("text", SAMPLE_TEXTS + UNSEEN_TEXTS)
def test_decode_inverts_encode(ours, text):
    assert ours.decode(ours.encode(text)) == text


def test_eos_is_the_special_token(ours, tiny_checkpoint):
    vocab = json.loads((tiny_checkpoint / "vocab.json").read_text())
    assert ours.eos_token_id == vocab["<|endoftext|>"] == len(vocab) - 1 == ours.vocab_size - 1
    assert ours.encode("<|endoftext|>") == [ours.eos_token_id]


def test_a_character_cut_between_tokens_decodes_to_the_replacement_character(ours):
    ids = ours.encode("🫠")  # not in the training text: one token per UTF-8 byte
    assert len(ids) == 4
    assert ours.decode(ids) == "🫠"
    assert ours.decode(ids[:2]) == "\ufffd"
    assert ours.decode(ids[:2]) + ours.decode(ids[2:]) != "🫠"  # why streaming must decode whole characters


def test_files_that_do_not_belong_together_are_refused(tiny_checkpoint, tmp_path):
    vocab = json.loads((tiny_checkpoint / "vocab.json").read_text())
    merges = (tiny_checkpoint / "merges.txt").read_text()
    (tmp_path / "vocab.json").write_text(json.dumps(dict(list(vocab.items())[:300])))
    (tmp_path / "merges.txt").write_text(merges)
    with pytest.raises(CheckpointError, match="do not belong together"):
        Tokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    (tmp_path / "vocab.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a GPT-2 vocabulary"):
        Tokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")


def test_ids_past_the_vocabulary_have_no_text_and_negative_ids_are_refused(ours, reference_tokenizer):
    # A model whose embedding was resized to a round size can emit such ids; transformers decodes them to "".
    assert ours.decode([40, 5000, 41]) == reference_tokenizer.decode([40, 5000, 41]) == ours.decode([40, 41])
    assert "".join(ours.decode_stream([40, 5000, 41])) == ours.decode([40, 41])
    with pytest.raises(ValueError, match=r"token ids \[-1\] are negative"):
        ours.decode([1, 5000, -1])


def test_decoding_ids_that_split_a_character(ours):
    tokenizer = ours
    ids = tokenizer.encode("한")
    assert len(ids) > 1  # this vocabulary has no token for the whole character
    assert tokenizer.decode(ids[:1]) == "\ufffd"  # defined: U+FFFD, never an exception
    assert tokenizer.decode(ids) == "한"


STREAM_TEXTS = ["안녕하세요, 세계! 👋🏽 👨‍👩‍👧", "こんにちは 世界", "plain ASCII", "naïve café ☕"]


@pytest.mark.parametrize("text", STREAM_TEXTS)
def test_streamed_text_is_never_broken_and_joins_to_the_whole(ours, text):
    tokenizer = ours
    ids = tokenizer.encode(text)
    pieces = list(tokenizer.decode_stream(iter(ids)))
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in piece for piece in pieces)  # no half of a character printed on its own
    if text == STREAM_TEXTS[0]:  # the case that matters happens: some tokens hold only part of a character
        assert any("\ufffd" in tokenizer.decode([i]) for i in ids)


def test_encode_batch_pads_on_the_left(ours):
    tokenizer = ours
    input_ids, attention_mask = tokenizer.encode_batch(["Hello there", "Hi", ""])
    lengths = attention_mask.sum(dim=1).tolist()
    assert lengths == [len(tokenizer.encode("Hello there")), len(tokenizer.encode("Hi")), 1]
    for row, mask, text in zip(input_ids.tolist(), attention_mask.tolist(), ["Hello there", "Hi"], strict=False):
        real = [t for t, m in zip(row, mask, strict=True) if m]
        assert real == tokenizer.encode(text) and mask == sorted(mask)  # zeros first, then ones
    assert input_ids[2, -1] == tokenizer.eos_token_id  # an empty text starts from eos
    assert (input_ids[attention_mask == 0] == tokenizer.eos_token_id).all()  # pad = eos


# ---- properties: any text ----

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Any Unicode that UTF-8 can hold (so no lone surrogates: hypothesis draws them unless told), plus pieces
# GPT-2's pre-tokenizer treats specially: contractions, whitespace runs, the end-of-text token.
PIECE = st.one_of(
    st.characters(codec="utf-8"), st.sampled_from(["'s", "'ll", " ", "  ", "\n", "\r\n", "\t", "<|endoftext|>"])
)
TEXT = st.lists(PIECE, max_size=40).map("".join)


@pytest.fixture(scope="module")
def tokenizers(ours, tiny_checkpoint):
    return ours, GPT2TokenizerFast.from_pretrained(tiny_checkpoint)


@SETTINGS
@given(text=TEXT)
def test_decode_inverts_encode_for_any_text(tokenizers, text):
    ours, _ = tokenizers
    assert ours.decode(ours.encode(text)) == text


@SETTINGS
@given(text=TEXT)
def test_encode_matches_transformers_for_any_text(tokenizers, text):
    ours, reference = tokenizers
    assert ours.encode(text) == reference.encode(text)
