"""The tiktoken-run tokenizer against transformers' GPT-2 tokenizer, on a vocabulary trained here."""

from __future__ import annotations

import json

import pytest
from minigpt2.parity.checkpoints import SAMPLE_TEXTS
from transformers import AutoTokenizer, GPT2Tokenizer

from minigpt2 import CheckpointError, Tokenizer

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
def ours(tiny_checkpoint):
    return Tokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module", params=["GPT2Tokenizer", "AutoTokenizer"])
def reference(tiny_checkpoint, request):
    cls = {"GPT2Tokenizer": GPT2Tokenizer, "AutoTokenizer": AutoTokenizer}[request.param]
    return cls.from_pretrained(tiny_checkpoint)


@pytest.mark.parametrize("text", SAMPLE_TEXTS + UNSEEN_TEXTS)
def test_ids_match_transformers(ours, reference, text):
    assert ours.encode(text) == reference.encode(text)


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


def test_ids_past_the_vocabulary_have_no_text_and_negative_ids_are_refused(ours, reference):
    # A model whose embedding was resized to a round size can emit such ids; transformers decodes them to "".
    assert ours.decode([40, 5000, 41]) == reference.decode([40, 5000, 41]) == ours.decode([40, 41])
    assert "".join(ours.decode_stream([40, 5000, 41])) == ours.decode([40, 41])
    with pytest.raises(ValueError, match=r"token ids \[-1\] are negative"):
        ours.decode([1, 5000, -1])
