"""The official weights (gpt2, gpt2-medium) against transformers.

Runs when the checkpoint is in the local hub cache, or when MINIGPT2_OFFICIAL=1 asks for a
download; skipped otherwise, with the reason.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import LOGIT_TOLERANCE
from huggingface_hub import try_to_load_from_cache
from transformers import GPT2LMHeadModel, GPT2Tokenizer

from minigpt2 import GPT2, Tokenizer
from minigpt2.checkpoint import OFFICIAL_REPOS
from minigpt2.testing.checkpoints import SAMPLE_TEXTS

FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")


def official(name):
    repo = OFFICIAL_REPOS[name]
    cached = all(isinstance(try_to_load_from_cache(repo, f), str) for f in FILES)
    run = cached or os.environ.get("MINIGPT2_OFFICIAL") == "1"
    reason = f"{repo} is not in the local hub cache; set MINIGPT2_OFFICIAL=1 to download it and run this test"
    return pytest.param(name, marks=pytest.mark.skipif(not run, reason=reason))


NAMES = [official("gpt2"), official("gpt2-medium")]


@pytest.fixture(scope="module")
def loaded():
    cache = {}

    def load(name):
        if name not in cache:
            repo = OFFICIAL_REPOS[name]
            cache[name] = (
                GPT2.from_pretrained(name),
                GPT2LMHeadModel.from_pretrained(repo).eval(),
                Tokenizer.from_pretrained(name),
                GPT2Tokenizer.from_pretrained(repo),
            )
        return cache[name]

    return load


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer(name, loaded):
    _, _, ours, reference = loaded(name)
    assert ours.encode("Once upon a time") == [7454, 2402, 257, 640]
    assert ours.eos_token_id == 50256
    for text in SAMPLE_TEXTS:
        assert ours.encode(text) == reference.encode(text)


@pytest.mark.parametrize("name", NAMES)
def test_logits(name, loaded):
    ours, reference, tokenizer, _ = loaded(name)
    for text in SAMPLE_TEXTS:
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            diff = (ours(ids) - reference(ids).logits).abs().max().item()
        print(f"\n{name}: max abs logit difference {diff:.3e} on {text[:30]!r}")
        assert diff <= LOGIT_TOLERANCE


@pytest.mark.parametrize("name", NAMES)
def test_greedy_continuation_of_once_upon_a_time(name, loaded):
    ours, reference, tokenizer, _ = loaded(name)
    ids = torch.tensor([tokenizer.encode("Once upon a time")])
    expected = reference.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False, pad_token_id=50256
    )
    got = ours.generate(ids, max_new_tokens=40, eos_token_id=50256)
    print(f"\n{name}: {tokenizer.decode(got[0])!r}")
    assert got.tolist() == expected.tolist()


KOGPT2 = "skt/kogpt2-base-v2"
KOGPT2_CACHED = all(
    isinstance(try_to_load_from_cache(KOGPT2, f), str) for f in ("config.json", "tokenizer.json")
) and any(isinstance(try_to_load_from_cache(KOGPT2, f), str) for f in ("model.safetensors", "pytorch_model.bin"))


@pytest.mark.skipif(
    not (KOGPT2_CACHED or os.environ.get("MINIGPT2_OFFICIAL") == "1"),
    reason=f"{KOGPT2} is not in the local hub cache; set MINIGPT2_OFFICIAL=1 to download it and run this test",
)
def test_korean_gpt2_tokens_logits_and_greedy_text():
    from test_tokenizer_files import KOGPT2_CARD, KOREAN_TEXTS
    from transformers import PreTrainedTokenizerFast

    ours, tokenizer = GPT2.from_pretrained(KOGPT2), Tokenizer.from_pretrained(KOGPT2)
    reference = GPT2LMHeadModel.from_pretrained(KOGPT2).eval()
    card = PreTrainedTokenizerFast.from_pretrained(KOGPT2, **KOGPT2_CARD)  # as its model card loads it
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (card.eos_token_id, card.pad_token_id)
    for text in KOREAN_TEXTS:
        assert tokenizer.encode(text) == card.encode(text), text
    ids = torch.tensor([tokenizer.encode("근육이 커지기 위해서는")])
    with torch.no_grad():
        diff = (ours(ids) - reference(ids).logits).abs().max().item()
    print(f"\n{KOGPT2}: max abs logit difference {diff:.3e}")
    assert diff <= LOGIT_TOLERANCE
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    expected = reference.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False, eos_token_id=eos, pad_token_id=pad
    )
    got = ours.generate(ids, max_new_tokens=40, eos_token_id=eos)[:, : expected.size(1)]
    print(f"\n{KOGPT2}: {tokenizer.decode(got[0])!r}")
    assert got.tolist() == expected.tolist()


WIKITEXT = os.environ.get("MINIGPT2_WIKITEXT")  # WikiText-2's raw test file, wiki.test.raw


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.skipif(not WIKITEXT, reason="set MINIGPT2_WIKITEXT to WikiText-2's wiki.test.raw to run this test")
def test_wikitext_perplexity_at_stride_512(name, loaded):
    """The perplexity guide's figure, on the official weights: minigpt2's perplexity() and the guide's loop on
    transformers, over the joined test split, at stride 512. Their sums differ in what the guide leaves
    uncounted (one token a window); each is printed beside the other."""
    from minigpt2.parity.reference import guide_perplexity
    from minigpt2.scoring import perplexity

    ours, reference, tokenizer, _ = loaded(name)
    text = open(WIKITEXT, encoding="utf-8").read()  # the raw file as it is (the guide joins the split's lines)
    ids = tokenizer.encode(text)
    result = perplexity(ours, ids, stride=512, batch_size=4, text=text)
    guide_nll, guide_tokens = guide_perplexity(reference, ids, 1024, 512)
    ours_guide_nll, ours_guide_tokens = guide_perplexity(ours, ids, 1024, 512)
    print(
        f"\n{name}: perplexity {result.perplexity:.4f} over {result.tokens} tokens (bits per byte "
        f"{result.bits_per_byte:.4f}); the guide's loop: transformers {torch.tensor(guide_nll / guide_tokens).exp():.4f}, "
        f"minigpt2 {torch.tensor(ours_guide_nll / ours_guide_tokens).exp():.4f} over {guide_tokens} tokens"
    )
    assert ours_guide_tokens == guide_tokens and abs(ours_guide_nll - guide_nll) / guide_nll < 1e-6
