"""minigpt2/interp/sae.py against SAELens itself: a random SAE of each architecture (standard, jumprelu, topk), built
with sae-lens and written by its own save_model, loaded from that folder; the same feature activations,
reconstructions, splices (with and without the error term, in a forward pass and in generation), top features
and loss delta. And folders that cannot be used, refused with a one-line message (these need no sae-lens)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from minigpt2.interp.sae import SAE, reconstruction_loss, run_with_sae, top_features

HOOK = "blocks.1.hook_resid_pre"
PROMPT = "The quick brown fox jumps over the lazy dog, and then it runs away."
TOPK = 16  # the topk SAE's k
ARCHITECTURES = ["standard", "jumprelu", "topk"]


@pytest.fixture(scope="module")
def ids(tiny):
    _, tokenizer = tiny
    return torch.tensor([tokenizer.encode(PROMPT)])


@pytest.fixture(scope="module")
def acts(tiny, ids):
    """The activation the SAEs read, [1, T, n_embd]."""
    model, _ = tiny
    return model.run_with_cache(ids, [HOOK])[1][HOOK]


@pytest.fixture(params=ARCHITECTURES)
def pair(request, tiny, tmp_path):
    """(sae-lens's SAE, minigpt2's SAE loaded from the folder sae-lens saved it into)."""
    sae_lens = pytest.importorskip("sae_lens", reason="the reference SAEs are sae-lens's own (pip install sae-lens)")
    from sae_lens.saes.sae import SAEMetadata

    model, _ = tiny
    d_in, d_sae = model.config.n_embd, 4 * model.config.n_embd
    config_class, sae_class = {
        "standard": (sae_lens.StandardSAEConfig, sae_lens.StandardSAE),
        "jumprelu": (sae_lens.JumpReLUSAEConfig, sae_lens.JumpReLUSAE),
        "topk": (sae_lens.TopKSAEConfig, sae_lens.TopKSAE),
    }[request.param]
    extra = {"k": TOPK} if request.param == "topk" else {}
    theirs = sae_class(config_class(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=HOOK), **extra)).eval()
    # Non-trivial weights: the activations at HOOK have norm ~16, so pre-activations of a few units either
    # side of 0, with random biases, and thresholds that silence some of the positive ones.
    g = torch.Generator().manual_seed(ARCHITECTURES.index(request.param))
    with torch.no_grad():
        theirs.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        theirs.b_enc.copy_(torch.randn(d_sae, generator=g))
        theirs.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) / d_in**0.5)
        theirs.b_dec.copy_(torch.randn(d_in, generator=g) * 0.5)
        if request.param == "jumprelu":
            theirs.threshold.copy_(torch.rand(d_sae, generator=g) * 3)
    theirs.save_model(tmp_path / "sae")
    return theirs, SAE.from_pretrained(tmp_path / "sae")


def reconstruct(theirs):
    """A hook putting sae-lens's reconstruction in place of the activation (its forward, no error term)."""

    def hook(x):
        with torch.no_grad():
            return theirs(x)

    return hook


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def test_features_and_reconstructions_equal_sae_lens(pair, tiny, ids, acts):
    theirs, ours = pair
    model, _ = tiny
    assert ours.architecture == theirs.cfg.architecture() and ours.hook_name == HOOK
    with torch.no_grad():
        features = theirs.encode(acts)
        diffs = {
            "encode": max_diff(ours.encode(acts), features),
            "decode": max_diff(ours.decode(features), theirs.decode(features)),
            "forward": max_diff(ours(acts), theirs(acts)),
            "run_with_sae features": max_diff(run_with_sae(model, ids, ours)[1], features),
        }
    print(f"\n{ours.architecture}: max |minigpt2 - sae-lens|: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert all(diff < 1e-5 for diff in diffs.values()), diffs
    # The weights make the comparison mean something: features both fire and stay silent.
    firing = (features > 0).float().mean().item()
    print(f"{ours.architecture}: {firing:.1%} of (position, feature) pairs fire")
    assert 0 < firing < 1
    if ours.architecture == "jumprelu":  # some positive pre-activations are silenced by their threshold
        pre = (acts - theirs.b_dec) @ theirs.W_enc + theirs.b_enc
        assert ((pre > 0) & (pre <= theirs.threshold) & (features == 0)).any()
    if ours.architecture == "topk":
        assert (features > 0).sum(dim=-1).max().item() == TOPK


def test_splicing_with_the_error_term_keeps_the_logits(pair, tiny, ids, acts):
    theirs, ours = pair
    model, _ = tiny
    with torch.no_grad():
        clean = model(ids)
        features = theirs.encode(acts)
    logits, kept = run_with_sae(model, ids, ours, use_error_term=True)
    diff = max_diff(logits, clean)
    print(f"\n{ours.architecture}: with the error term, max |logits - clean logits| {diff:.2e}")
    assert diff < 1e-5
    assert max_diff(kept, features) < 1e-5


def test_splicing_without_the_error_term_and_the_loss_delta(pair, tiny, ids):
    theirs, ours = pair
    model, _ = tiny
    with torch.no_grad():
        clean = model(ids)
        by_hand = model(ids, hooks={HOOK: reconstruct(theirs)})
    spliced, _ = run_with_sae(model, ids, ours)
    moved, diff = max_diff(spliced, clean), max_diff(spliced, by_hand)
    # The next-token loss, by hand: each position predicts the next token.
    clean_loss = F.cross_entropy(clean[0, :-1], ids[0, 1:]).item()
    spliced_loss = F.cross_entropy(by_hand[0, :-1], ids[0, 1:]).item()
    report = reconstruction_loss(model, ids, ours)
    print(
        f"\n{ours.architecture}: without the error term the logits move by up to {moved:.3f}; "
        f"max |minigpt2 splice - sae-lens reconstruction spliced by hand| {diff:.2e}\n"
        f"  loss delta {report['ce_loss_delta']:.6f}, by hand {spliced_loss - clean_loss:.6f} "
        f"(clean {clean_loss:.6f}, with reconstruction {spliced_loss:.6f})"
    )
    assert moved > 0.1 and diff < 1e-5
    assert abs(report["ce_loss_without_sae"] - clean_loss) < 1e-5
    assert abs(report["ce_loss_with_sae"] - spliced_loss) < 1e-5
    assert abs(report["ce_loss_delta"] - (spliced_loss - clean_loss)) < 1e-5


def test_top_features_equal_torch_topk_of_sae_lens_features(pair, acts):
    theirs, ours = pair
    k = 10
    with torch.no_grad():
        expected_values, expected_ids = torch.topk(theirs.encode(acts)[0], k, dim=-1)  # [T, k]
    values, feature_ids = top_features(ours.encode(acts)[0], k)
    assert values.shape == feature_ids.shape == (acts.size(1), k)
    diff = max_diff(values, expected_values)
    print(f"\n{ours.architecture}: top-{k} features, max |value difference| {diff:.2e}")
    assert diff < 1e-5
    active = expected_values > 0  # silent features tie at 0, and any of them may come back
    assert active.any() and torch.equal(feature_ids[active], expected_ids[active])


def test_splicing_during_generation(pair, tiny, ids):
    theirs, ours = pair
    model, _ = tiny
    n = 10
    plain = model.generate(ids, max_new_tokens=n)
    with_error_term = model.generate(ids, max_new_tokens=n, hooks=ours.hooks(use_error_term=True))
    assert torch.equal(with_error_term, plain)
    spliced = model.generate(ids, max_new_tokens=n, hooks=ours.hooks())
    # Greedy by hand: a whole forward pass per token with sae-lens's reconstruction in place.
    by_hand = ids
    with torch.no_grad():
        for _ in range(n):
            step = model(by_hand, hooks={HOOK: reconstruct(theirs)})[:, -1].argmax(dim=-1, keepdim=True)
            by_hand = torch.cat([by_hand, step], dim=1)
    T = ids.size(1)
    print(
        f"\n{ours.architecture}: plain greedy {plain[0, T:].tolist()}\n"
        f"  with the SAE spliced {spliced[0, T:].tolist()}, by hand {by_hand[0, T:].tolist()}"
    )
    assert spliced.size(1) > T and torch.equal(spliced, by_hand[:, : spliced.size(1)])


# Folders that cannot be used. Written by hand (SAELens's cfg.json fields), so these run without sae-lens.


def write_sae(folder, *, architecture="standard", d_in=64, d_sae=32, hook=HOOK, cfg=True, weights=True):
    folder.mkdir()
    if cfg:
        fields = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "metadata": {"hook_name": hook}}
        (folder / "cfg.json").write_text(json.dumps(fields))
    if weights:
        g = torch.Generator().manual_seed(0)
        tensors = {
            "W_enc": torch.randn(d_in, d_sae, generator=g),
            "b_enc": torch.zeros(d_sae),
            "W_dec": torch.randn(d_sae, d_in, generator=g),
            "b_dec": torch.zeros(d_in),
        }
        save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


def one_line(error) -> str:
    message = str(error.value)
    assert message and "\n" not in message, message
    return message


def test_bad_sae_folders(tiny, ids, tmp_path):
    model, _ = tiny
    with pytest.raises((ValueError, FileNotFoundError), match="cfg.json") as error:
        SAE.from_pretrained(write_sae(tmp_path / "no-cfg", cfg=False))
    print(f"\nno cfg.json: {one_line(error)}")
    with pytest.raises((ValueError, FileNotFoundError), match="sae_weights.safetensors") as error:
        SAE.from_pretrained(write_sae(tmp_path / "no-weights", weights=False))
    print(f"no weights: {one_line(error)}")
    with pytest.raises(ValueError, match="architecture 'gated'") as error:
        SAE.from_pretrained(write_sae(tmp_path / "gated", architecture="gated"))
    print(f"unknown architecture: {one_line(error)}")

    narrow = SAE.from_pretrained(write_sae(tmp_path / "narrow", d_in=32))  # the stream is 64 wide
    for name, call in [
        ("run_with_sae", lambda: run_with_sae(model, ids, narrow)),
        ("reconstruction_loss", lambda: reconstruction_loss(model, ids, narrow)),
        ("generate", lambda: model.generate(ids, max_new_tokens=2, hooks=narrow.hooks())),
    ]:
        with pytest.raises(ValueError, match="d_in") as error:
            call()
        print(f"d_in 32 at a 64-wide hook point, {name}: {one_line(error)}")

    elsewhere = SAE.from_pretrained(write_sae(tmp_path / "elsewhere", hook="blocks.9.hook_resid_pre"))
    with pytest.raises(ValueError, match="blocks.9.hook_resid_pre") as error:
        run_with_sae(model, ids, elsewhere)
    print(f"a hook point the model lacks: {one_line(error)}")
