"""minigpt2/interp/heads.py: head detector scores per layer x head.

Against TransformerLens 3 (the tiny model in a HookedTransformer): head_scores equals
transformer_lens.head_detector.detect_head for each kind of head, error measure and exclusion, on natural
text and on a random sequence repeated twice; induction_scores equals the induction score of
TransformerLens's demos (the stripe of the pattern L - 1 below the diagonal, averaged).

Without TransformerLens: hand-built one-layer models whose one head attends exactly to the previous token,
or uniformly, score what those patterns must score; and plots.plot_head_scores writes a PNG.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import hooked_transformer

from minigpt2 import GPT2, GPT2Config
from minigpt2.interp.heads import KINDS, head_scores, induction_scores, repeated_random_tokens

TOLERANCE = 1e-5
TL_NAMES = {
    "previous_token": "previous_token_head",
    "duplicate_token": "duplicate_token_head",
    "induction": "induction_head",
}
OPTIONS = {
    "mul": dict(),
    "mul, no bos": dict(exclude_bos=True),
    "mul, no current": dict(exclude_current_token=True),
    "abs": dict(error_measure="abs"),
    "abs, no bos, no current": dict(error_measure="abs", exclude_bos=True, exclude_current_token=True),
}


# TransformerLens ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tl():
    transformer_lens = pytest.importorskip("transformer_lens", reason="TransformerLens is not installed (test extra)")
    if not hasattr(transformer_lens, "HookedTransformer"):
        pytest.skip("this TransformerLens has no HookedTransformer (4.x); the test extra pins 3.x")
    return transformer_lens


@pytest.fixture(scope="module")
def theirs(tl, tiny_checkpoint, reference):
    """The tiny model in a HookedTransformer, unprocessed (processing leaves the patterns as they are)."""
    from transformers import AutoTokenizer

    model = hooked_transformer(reference)
    model.set_tokenizer(AutoTokenizer.from_pretrained(tiny_checkpoint))
    return model


@pytest.fixture(scope="module")
def repeated_text(tiny_checkpoint):
    """Twenty random words of the vocabulary (each one token with its leading space), then the same again:
    a text whose tokens are a random sequence repeated twice."""
    vocab = json.loads((tiny_checkpoint / "vocab.json").read_text(encoding="utf-8"))
    words = sorted(
        token[1:] for token in vocab if token.startswith("Ġ") and token[1:].isascii() and token[1:].isalpha()
    )
    chosen = torch.randperm(len(words), generator=torch.Generator().manual_seed(0))[:20]
    once = "".join(" " + words[i] for i in chosen)
    return once + once


def texts(repeated_text):
    return {
        "natural": "The cat sat on the mat. The cat sat on the mat again, and the dog sat on the cat.",
        "repeated": repeated_text,
    }


@pytest.mark.parametrize("kind", KINDS)
def test_head_scores_match_detect_head(tl, tiny, theirs, repeated_text, kind):
    from transformer_lens.head_detector import detect_head

    model, _ = tiny
    worst = 0.0
    for name, text in texts(repeated_text).items():
        tokens = theirs.to_tokens(text)[0]  # detect_head's own tokens: the bos first
        if name == "repeated":
            half = (tokens.numel() - 1) // 2
            assert torch.equal(tokens[1 : 1 + half], tokens[1 + half :]), "the text must tokenize as a repeat"
        for label, options in OPTIONS.items():
            ours = head_scores(model, tokens, kind, **options)
            expected = detect_head(theirs, text, TL_NAMES[kind], **options)
            assert ours.shape == expected.shape == (model.config.n_layer, model.config.n_head)
            difference = (ours - expected).abs().max().item()
            print(f"\n{kind}, {name} text, {label}: max difference {difference:.2e}")
            worst = max(worst, difference)
    assert worst <= TOLERANCE


def test_a_list_of_texts_is_their_mean(tl, tiny, theirs, repeated_text):
    """detect_head on a list of texts averages their scores: ours, text by text, averaged."""
    from transformer_lens.head_detector import detect_head

    model, _ = tiny
    prompts = list(texts(repeated_text).values())
    ours = torch.stack([head_scores(model, theirs.to_tokens(text)[0], "induction") for text in prompts]).mean(0)
    difference = (ours - detect_head(theirs, prompts, "induction_head")).abs().max().item()
    print(f"\ninduction, both texts averaged: max difference {difference:.2e}")
    assert difference <= TOLERANCE


@pytest.mark.parametrize("bos", [True, False], ids=["bos first", "no bos"])
def test_induction_scores_match_transformer_lens_demos(tl, tiny, theirs, bos):
    """As TransformerLens's demos score induction: a hook on every hook_pattern takes the stripe
    pattern.diagonal(offset=1 - seq_len) of a random sequence repeated twice, averaged over batch and stripe."""
    model, tokenizer = tiny
    seq_len, batch = 30, 4
    tokens = repeated_random_tokens(
        model.config.vocab_size, seq_len, batch, seed=1, bos=tokenizer.eos_token_id if bos else None
    )
    scores = torch.zeros(model.config.n_layer, model.config.n_head)

    def induction_score_hook(pattern, hook):
        scores[hook.layer()] = pattern.diagonal(dim1=-2, dim2=-1, offset=1 - seq_len).mean(dim=(0, 2))

    theirs.run_with_hooks(tokens, fwd_hooks=[(lambda name: name.endswith("pattern"), induction_score_hook)])
    ours = induction_scores(model, tokens)
    difference = (ours - scores).abs().max().item()
    print(f"\ninduction scores ({'bos first' if bos else 'no bos'}): max difference {difference:.2e}")
    assert difference <= TOLERANCE


# Hand-built heads (no TransformerLens) --------------------------------------------------------------------


def one_head_model(T: int, vocab_size: int = 50, previous_token: bool = True) -> GPT2:
    """One layer, one head, T positions, everything else zero (token embeddings too, so only positions matter).

    Position p is embedded as e_p - e_{T+p}: mean zero, the same norm for every p, so ln_1 only scales it.
    previous_token: the query of position p is the key of position p - 1, times a gain large enough that
    the softmax is one-hot on p - 1. Otherwise queries are zero: the head attends uniformly to every key."""
    C = 2 * T
    model = GPT2(GPT2Config(vocab_size=vocab_size, n_positions=T, n_embd=C, n_layer=1, n_head=1, eos_token_id=None))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for ln in (model.h[0].ln_1, model.h[0].ln_2, model.ln_f):
            ln.weight.fill_(1)
        eye = torch.eye(T)
        model.wpe.weight.copy_(torch.cat([eye, -eye], dim=1))
        down_one = torch.diag(torch.ones(T - 1), diagonal=1)  # down_one @ e_p = e_{p-1}, within each half
        W_Q, W_K, W_V = model.h[0].attn.c_attn.weight.view(3, C, C)
        if previous_token:
            W_Q.copy_(10 * torch.block_diag(down_one, down_one))
        W_K.copy_(torch.eye(C))
        W_V.copy_(torch.eye(C))
    return model.eval()


def distinct_tokens(T: int, vocab_size: int = 50) -> torch.Tensor:
    return torch.randperm(vocab_size, generator=torch.Generator().manual_seed(0))[:T]


def test_a_head_that_attends_to_the_previous_token_scores_one():
    T = 16
    model, tokens = one_head_model(T), distinct_tokens(T)
    pattern = model.attention_patterns(tokens[None])[0, 0, 0]  # [T, T]
    ideal = torch.eye(T).roll(-1, dims=1).tril()  # position q -> q - 1 (and position 0, alone, to itself)
    ideal[0, 0] = 1
    assert (pattern - ideal).abs().max() < 1e-6  # the construction works: one-hot on the previous token
    # Position 0 has no previous token: its attention (all on itself) is the 1 / T that "mul" misses.
    scores = {
        "mul": head_scores(model, tokens, "previous_token").item(),
        "mul, no current": head_scores(model, tokens, "previous_token", exclude_current_token=True).item(),
        "abs": head_scores(model, tokens, "previous_token", error_measure="abs").item(),
        "abs, no current": head_scores(
            model, tokens, "previous_token", error_measure="abs", exclude_current_token=True
        ).item(),
        "duplicate": head_scores(model, tokens, "duplicate_token").item(),
    }
    print(f"\nprevious-token head: {scores}")
    assert scores["mul"] == pytest.approx((T - 1) / T, abs=1e-6)
    assert scores["mul, no current"] == pytest.approx(1.0, abs=1e-6)
    assert scores["abs"] == pytest.approx(1 - round(1 / T, 3), abs=1e-6)
    assert scores["abs, no current"] == pytest.approx(1.0, abs=1e-6)
    assert scores["duplicate"] == 0  # no token repeats: nothing where the pattern is 1
    induction = induction_scores(model, repeated_random_tokens(50, T // 2, batch=2)).item()
    print(f"its induction score: {induction:.2e}")
    assert induction < 1e-6  # it never looks back L - 1 tokens


def test_a_uniform_head_scores_near_zero():
    """Zero queries: every key gets 1 / (q + 1) from query q. The scores follow from that alone."""
    T = 64
    model = one_head_model(T, previous_token=False)
    tokens = repeated_random_tokens(50, T // 2)[0]
    uniform = torch.ones(T, T).tril() / torch.arange(1, T + 1)[:, None]
    expected_previous = sum(1 / (q + 1) for q in range(1, T)) / T
    scores = {kind: head_scores(model, tokens, kind).item() for kind in KINDS}
    stripe = uniform.diagonal(offset=1 - T // 2)
    induction = induction_scores(model, tokens[None]).item()
    print(f"\nuniform head: {scores}, induction score {induction:.4f}")
    assert (model.attention_patterns(tokens[None])[0, 0, 0] - uniform).abs().max() < 1e-6
    assert scores["previous_token"] == pytest.approx(expected_previous, abs=1e-6) and scores["previous_token"] < 0.1
    assert induction == pytest.approx(stripe.mean().item(), abs=1e-6) and induction < 0.1
    assert max(scores.values()) < 0.1


def test_a_batch_is_refused_not_run_as_one_long_sequence():
    model = one_head_model(16)
    tokens = repeated_random_tokens(50, 4, batch=2)  # [2, 8]: fits the context even joined into one
    with pytest.raises(ValueError, match=r"one sequence, \[T\] or \[1, T\], got \[2, 8\]"):
        head_scores(model, tokens, "previous_token")
    assert head_scores(model, tokens[:1], "previous_token").shape == (1, 1)


def test_head_scores_plot_writes_a_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib", reason='plots need matplotlib (pip install "minigpt2[plots]")')
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minigpt2.interp.plots import plot_head_scores

    scores = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    ax = plot_head_scores(scores, title="previous-token heads")
    path = tmp_path / "heads.png"
    ax.figure.savefig(path)
    plt.close(ax.figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ax.get_title() == "previous-token heads" and len(ax.get_xticks()) == 4 and len(ax.get_yticks()) == 3
