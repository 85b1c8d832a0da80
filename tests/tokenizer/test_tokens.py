"""TransformerLens's ways of writing tokens (Tokenizer.to_tokens, to_str_tokens, to_string: minigpt2/tokenizer/)
against TransformerLens 3's HookedTransformer with the same tokenizer files (the tiny checkpoint's byte-level
BPE, as transformers reads them): with and without the bos first, one text or a list padded on either side,
ids given as a tensor, a row or a list; unicode, leading and trailing whitespace, near-empty texts.

Where the two deliberately differ, a test says so: a text with no tokens (and no bos) is refused here, and
TransformerLens cuts a text to its model's context, which a tokenizer on its own does not know.
"""

from __future__ import annotations

import pytest
import torch
from conftest import hooked_transformer

transformer_lens = pytest.importorskip("transformer_lens", reason="TransformerLens is not installed (the test extra)")

TEXTS = [
    "Hello world",
    " leading space",
    "   three leading spaces and trailing ones   ",
    "café naïve résumé — “quotes” Ångström",
    "한국어 문장과 English, 中文, 😀 and 🫠 (not in the vocabulary: one token per byte)",
    "\n",
    " ",
    "a",
    "tabs\t\tand\r\nnewlines\n\n",
    "x<|endoftext|>y <|endoftext|>",
]
BATCHES = [TEXTS[:3], [TEXTS[3], "a", " ", TEXTS[4]], ["", "Hello world"]]


@pytest.fixture(scope="module")
def ours(tiny):
    return tiny[1]


@pytest.fixture(scope="module")
def theirs(tiny_checkpoint, reference):
    """HookedTransformer holding the tiny model, with that checkpoint's tokenizer as AutoTokenizer reads it."""
    if not hasattr(transformer_lens, "HookedTransformer"):
        pytest.skip("this TransformerLens has no HookedTransformer (4.x); the test extra pins 3.x")
    from transformers import AutoTokenizer

    model = hooked_transformer(reference)
    model.set_tokenizer(AutoTokenizer.from_pretrained(tiny_checkpoint))
    return model


@pytest.mark.parametrize("prepend_bos", [True, False], ids=["bos", "no bos"])
@pytest.mark.parametrize("text", TEXTS)
def test_one_text(ours, theirs, text, prepend_bos):
    ids = ours.to_tokens(text, prepend_bos=prepend_bos)
    assert torch.equal(ids, theirs.to_tokens(text, prepend_bos=prepend_bos))
    assert ours.to_str_tokens(text, prepend_bos=prepend_bos) == theirs.to_str_tokens(text, prepend_bos=prepend_bos)
    for given in (ids, ids[0], ids[0].tolist()):  # [1, T], [T], a list of ids
        assert ours.to_string(given) == theirs.to_string(given)
    for given in (ids, ids[0]):
        assert ours.to_str_tokens(given) == theirs.to_str_tokens(given)


def test_the_default_puts_the_bos_first(ours, theirs):
    text = TEXTS[1]
    assert torch.equal(ours.to_tokens(text), theirs.to_tokens(text))
    assert ours.to_tokens(text)[0, 0] == ours.eos_token_id  # GPT-2's bos is its eos
    assert ours.to_str_tokens(text) == theirs.to_str_tokens(text)
    assert ours.to_string(ours.to_tokens(text)[0]) == "<|endoftext|>" + text


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("prepend_bos", [True, False], ids=["bos", "no bos"])
@pytest.mark.parametrize("texts", BATCHES, ids=["three", "unicode", "empty"])
def test_a_list_of_texts_is_padded_as_transformer_lens_pads_it(ours, theirs, texts, prepend_bos, padding_side):
    if not prepend_bos:  # without the bos an empty text has no tokens (test_a_text_with_no_tokens)
        texts = [text for text in texts if text]
    ids = ours.to_tokens(texts, prepend_bos=prepend_bos, padding_side=padding_side)
    assert torch.equal(ids, theirs.to_tokens(texts, prepend_bos=prepend_bos, padding_side=padding_side))
    assert ours.to_string(ids) == theirs.to_string(ids)  # a list of strings, the padding (eos) included
    assert ours.to_str_tokens(list(ids)) == theirs.to_str_tokens(list(ids))  # a list of rows
    kwargs = dict(prepend_bos=prepend_bos, padding_side=padding_side)
    assert ours.to_str_tokens(texts, prepend_bos=prepend_bos) == theirs.to_str_tokens(texts, **kwargs)


def test_a_text_with_no_tokens(ours, theirs):
    """With the bos first, the empty text is the bos alone in both. Without it there is nothing: TransformerLens
    returns an empty [1, 0] row; minigpt2 refuses it (a model cannot run on no tokens)."""
    assert torch.equal(ours.to_tokens(""), theirs.to_tokens(""))
    assert ours.to_str_tokens("") == theirs.to_str_tokens("") == ["<|endoftext|>"]
    assert theirs.to_tokens("", prepend_bos=False).shape == (1, 0)
    with pytest.raises(ValueError, match="a text with no tokens"):
        ours.to_tokens("", prepend_bos=False)


def test_transformer_lens_cuts_text_to_its_models_context(ours, theirs):
    """TransformerLens truncates to its model's n_ctx (truncate=True); a tokenizer has no context to cut to."""
    text = " ".join(["word"] * 2 * theirs.cfg.n_ctx)
    ids, cut = ours.to_tokens(text), theirs.to_tokens(text)
    assert cut.size(1) == theirs.cfg.n_ctx < ids.size(1)
    assert torch.equal(ids[:, : cut.size(1)], cut)
    assert torch.equal(ids, theirs.to_tokens(text, truncate=False))
