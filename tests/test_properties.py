"""Property tests: the tokenizer round-trips any text and agrees with transformers; the cache changes no number."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GPT2TokenizerFast

from minigpt2 import GPT2, GPT2Config, Tokenizer

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Any Unicode that UTF-8 can hold (so no lone surrogates: hypothesis draws them unless told), plus pieces
# GPT-2's pre-tokenizer treats specially: contractions, whitespace runs, the end-of-text token.
PIECE = st.one_of(
    st.characters(codec="utf-8"), st.sampled_from(["'s", "'ll", " ", "  ", "\n", "\r\n", "\t", "<|endoftext|>"])
)
TEXT = st.lists(PIECE, max_size=40).map("".join)


@pytest.fixture(scope="module")
def tokenizers(tiny_checkpoint):
    return Tokenizer.from_pretrained(tiny_checkpoint), GPT2TokenizerFast.from_pretrained(tiny_checkpoint)


@SETTINGS
@given(text=TEXT)
def test_decode_inverts_encode(tokenizers, text):
    ours, _ = tokenizers
    assert ours.decode(ours.encode(text)) == text


@SETTINGS
@given(text=TEXT)
def test_encode_matches_transformers(tokenizers, text):
    ours, reference = tokenizers
    assert ours.encode(text) == reference.encode(text)


MODEL = GPT2(GPT2Config(vocab_size=101, n_positions=48, n_embd=32, n_layer=2, n_head=4)).eval()


@settings(max_examples=100, deadline=None)
@given(data=st.data(), batch=st.integers(1, 3), length=st.integers(1, 48))
def test_cached_forward_equals_plain_forward(data, batch, length):
    ids = torch.tensor(
        data.draw(
            st.lists(st.lists(st.integers(0, 100), min_size=length, max_size=length), min_size=batch, max_size=batch)
        )
    )
    splits = sorted(data.draw(st.sets(st.integers(1, length - 1), max_size=4))) if length > 1 else []
    with torch.no_grad():
        plain = MODEL(ids)
        cache = MODEL.new_cache(batch, length)
        pieces = [MODEL(ids[:, a:b], cache) for a, b in zip([0, *splits], [*splits, length], strict=True)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), plain, rtol=0, atol=1e-5)
