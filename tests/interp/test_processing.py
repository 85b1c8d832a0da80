"""minigpt2/interp/processing.py (TransformerLens's weight processing) against TransformerLens 3's HookedTransformer.

On a random checkpoint with GPT-2's real 50257-token vocabulary (a smaller shape, for speed), minigpt2 processed
with each step alone, all four (HookedTransformer.from_pretrained's defaults) and none
(from_pretrained_no_processing) has the weights and the activations of HookedTransformer processed the same
way. Then, without TransformerLens: what processing must leave alone (the log-softmax; the logits, up to
one constant per position for center_unembed) and that the default model is not processed at all.

HookedTransformer.from_pretrained looks the model's config.json up on the hub even when given hf_model=;
here it finds this checkpoint's own config.json in a local hub cache (cache_dir=, local_files_only=True), so
the shape comes from TransformerLens's own conversion of the config and nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import torch
from conftest import LOGIT_TOLERANCE, fill_hub_cache

from minigpt2 import GPT2
from minigpt2.interp.processing import Processing
from minigpt2.testing.checkpoints import write_checkpoint

TOLERANCE = 1e-5  # max abs difference, relative to the size of what is compared (at least 1)
STEPS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
NONE = dict.fromkeys(STEPS, False)
# Each step alone, all four (from_pretrained's defaults) and none (from_pretrained_no_processing).
CASES = {step: {**NONE, step: True} for step in STEPS} | {"all four": dict.fromkeys(STEPS, True), "none": NONE}
# Layer norms with weights and biases of their own (transformers' init leaves them 1 and 0, which folding
# would not notice) and a wider init than GPT-2's, so that a step done wrong shows far above the tolerance.
SHAPE = dict(n_layer=3, n_embd=96, n_head=4, n_positions=64, vocab_size=50257, initializer_range=0.1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random checkpoint in the official layout, made to give every step something to do: transformers'
    init leaves the biases 0 and the layer norms 1 and 0 (folding them would change nothing), and its token
    embeddings' mean over the vocabulary near 0 (center_unembed would hardly move a logit)."""
    from safetensors.torch import load_file, save_file

    path = write_checkpoint(tmp_path_factory.mktemp("processing"), seed=3, **SHAPE)
    state = load_file(path / "model.safetensors")
    generator = torch.Generator().manual_seed(3)
    for name, tensor in state.items():
        if name.endswith("weight") and name.split(".")[-2].startswith("ln_"):
            state[name] = 1 + 0.3 * torch.randn(tensor.shape, generator=generator)
        elif name.endswith("bias") and tensor.dim() == 1:  # not h.N.attn.bias, the causal mask
            state[name] = 0.1 * torch.randn(tensor.shape, generator=generator)
    state["wte.weight"] += 0.3 * torch.randn(SHAPE["n_embd"], generator=generator)  # a direction every token shares
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, SHAPE["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def unprocessed(checkpoint):
    return GPT2.from_pretrained(checkpoint)


def ours(checkpoint, steps: dict[str, bool]) -> GPT2:
    return GPT2.from_pretrained(checkpoint, process=Processing(**steps) if any(steps.values()) else False)


@pytest.fixture(scope="module")
def hooked(checkpoint, tiny_checkpoint, tmp_path_factory):
    """hooked(steps): HookedTransformer.from_pretrained("gpt2", hf_model=...) processed with those steps
    (from_pretrained_no_processing for none, from_pretrained's own defaults for all four)."""
    transformer_lens = pytest.importorskip("transformer_lens", reason="TransformerLens is not installed (test extra)")
    if not hasattr(transformer_lens, "HookedTransformer"):
        pytest.skip("this TransformerLens has no HookedTransformer (4.x); the test extra pins 3.x")
    from transformers import AutoTokenizer, GPT2LMHeadModel

    HookedTransformer = transformer_lens.HookedTransformer
    hub = tmp_path_factory.mktemp("hub")
    fill_hub_cache(hub, "gpt2", {"config.json": checkpoint / "config.json"}, commit="c" * 40)
    hf_model = GPT2LMHeadModel.from_pretrained(checkpoint).eval()
    # Any tokenizer will do (the model reads ids); given one, HookedTransformer does not fetch gpt2's.
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    offline = dict(hf_model=hf_model, tokenizer=tokenizer, device="cpu", cache_dir=str(hub), local_files_only=True)

    def load(steps):
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", DeprecationWarning)  # TransformerLens 3 points to its TransformerBridge
            if steps == NONE:
                model = HookedTransformer.from_pretrained_no_processing("gpt2", **offline)
            elif all(steps.values()):
                model = HookedTransformer.from_pretrained("gpt2", **offline)  # its defaults: all four
            else:
                model = HookedTransformer.from_pretrained("gpt2", **steps, **offline)
        model.set_use_attn_result(True)  # so that hook_result is cached too
        return model.eval()

    return load


def tl_weights(model: GPT2) -> dict[str, torch.Tensor]:
    """minigpt2's parameters under TransformerLens's names, in its shapes (nn.Linear weights are [out, in])."""
    C, H, D = model.config.n_embd, model.config.n_head, model.config.head_dim
    weights = {"embed.W_E": model.wte.weight, "pos_embed.W_pos": model.wpe.weight}
    for i, block in enumerate(model.h):
        p, attn, mlp = f"blocks.{i}.", block.attn, block.mlp
        qkv_weight = attn.c_attn.weight.view(3, H, D, C)
        qkv_bias = attn.c_attn.bias.view(3, H, D)
        for j, part in enumerate("QKV"):
            weights[p + f"attn.W_{part}"] = qkv_weight[j].transpose(1, 2)  # [H, C, D]
            weights[p + f"attn.b_{part}"] = qkv_bias[j]  # [H, D]
        weights[p + "attn.W_O"] = attn.c_proj.weight.T.reshape(H, D, C)
        weights[p + "attn.b_O"] = attn.c_proj.bias
        weights[p + "mlp.W_in"], weights[p + "mlp.b_in"] = mlp.c_fc.weight.T, mlp.c_fc.bias
        weights[p + "mlp.W_out"], weights[p + "mlp.b_out"] = mlp.c_proj.weight.T, mlp.c_proj.bias
        for tl_name, ln in (("ln1", block.ln_1), ("ln2", block.ln_2)):
            weights[p + tl_name + ".w"], weights[p + tl_name + ".b"] = ln.weight, ln.bias
    weights["ln_final.w"], weights["ln_final.b"] = model.ln_f.weight, model.ln_f.bias
    head = model.lm_head
    weights["unembed.W_U"] = head.weight.T
    weights["unembed.b_U"] = head.bias if head.bias is not None else torch.zeros(head.out_features)
    return weights


def difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Max abs difference over the size of what is compared (at least 1); the -inf of masked attention
    scores must sit in the same places."""
    ours, theirs = ours.detach().float(), theirs.detach().float()
    assert ours.shape == theirs.shape
    finite = torch.isfinite(theirs)
    if not finite.all():
        assert torch.equal(finite, torch.isfinite(ours)) and torch.equal(ours[~finite], theirs[~finite])
        ours, theirs = ours.where(finite, 0), theirs.where(finite, 0)
    return (ours - theirs).abs().max().item() / max(1.0, theirs.abs().max().item())


def their(name: str, model, cache) -> torch.Tensor:
    """TransformerLens's activation to compare with ours under the same name.

    One name means something else: TransformerLens's LayerNorm passes x / scale through hook_normalized and
    applies its weight and bias after the hook, while minigpt2's hook_normalized is the LayerNorm's output
    (what transformers' hidden_states end with). The two agree once fold_ln leaves weight 1 and bias 0;
    before that, ours is compared with TransformerLens's hook_normalized * w + b, its LayerNorm's output."""
    ln = model.get_submodule(name.rsplit(".", 1)[0]) if name.endswith("hook_normalized") else None
    if ln is not None and hasattr(ln, "w"):
        return cache[name] * ln.w + ln.b
    return cache[name]


@pytest.mark.parametrize("case", CASES)
def test_weights_and_activations_match_transformer_lens(case, checkpoint, hooked, ids):
    steps = CASES[case]
    model, theirs = ours(checkpoint, steps), hooked(steps)
    # Weights: every tensor of TransformerLens's state dict that has a counterpart here.
    their_state, mine = theirs.state_dict(), tl_weights(model)
    weights = {name: difference(mine[name], t) for name, t in their_state.items() if name in mine}
    left = sorted({name.split(".", 2)[-1] for name in their_state.keys() - mine.keys()})
    assert left == ["attn.IGNORE", "attn.mask"], left  # buffers only: the causal mask and its fill value
    if steps["fold_ln"]:  # TransformerLens drops the layer norms' weights; ours are left as ones and zeros
        assert not any(name.endswith((".w", ".b")) and name.startswith(("blocks", "ln_final")) for name in their_state)
        assert all(torch.all(mine[n] == (1 if n.endswith(".w") else 0)) for n in mine if n.endswith((".w", ".b")))
    # Activations: every name both caches hold, on the same ids.
    with torch.no_grad():
        their_logits, their_cache = theirs.run_with_cache(ids)
    logits, cache = model.run_with_cache(ids)
    shared = [name for name in cache if name in their_cache]
    assert shared == list(cache)  # all of ours (TransformerLens adds unembed.hook_in and hook_out)
    activations = {name: difference(cache[name], their(name, theirs, their_cache)) for name in shared}
    activations["logits"] = difference(logits, their_logits)
    activations["unembed.hook_in"] = difference(cache["ln_final.hook_normalized"], their_cache["unembed.hook_in"])
    worst_weight, worst_activation = max(weights, key=weights.get), max(activations, key=activations.get)
    print(
        f"\n{case}: {len(weights)} weights, max difference {weights[worst_weight]:.2e} ({worst_weight}); "
        f"{len(activations)} activations, max difference {activations[worst_activation]:.2e} ({worst_activation})"
    )
    assert max(weights.values()) <= TOLERANCE and max(activations.values()) <= TOLERANCE


@pytest.mark.parametrize("case", [c for c in CASES if c != "none"])
def test_processing_leaves_the_log_softmax_alone(case, checkpoint, unprocessed, ids):
    """Every step keeps what the model predicts; every step but center_unembed keeps the logits too, and
    center_unembed makes each position's logits mean-zero: it subtracts that position's mean."""
    steps = CASES[case]
    with torch.no_grad():
        before, after = unprocessed(ids), ours(checkpoint, steps)(ids)
    log_softmax = (after.log_softmax(-1) - before.log_softmax(-1)).abs().max().item()
    expected = before - before.mean(dim=-1, keepdim=True) if steps["center_unembed"] else before
    logits = (after - expected).abs().max().item()
    print(f"\n{case}: log-softmax moved by {log_softmax:.2e}, logits differ from the expected by {logits:.2e}")
    assert log_softmax <= LOGIT_TOLERANCE and logits <= LOGIT_TOLERANCE


def test_center_unembed_shifts_each_positions_logits_by_one_constant(checkpoint, unprocessed, ids):
    with torch.no_grad():
        shift = ours(checkpoint, CASES["center_unembed"])(ids) - unprocessed(ids)  # [B, T, V]
    per_position = shift.mean(dim=-1, keepdim=True)
    spread = (shift - per_position).abs().max().item()
    print(
        f"\nthe shift varies within a position by {spread:.2e}; across positions it ranges "
        f"{per_position.min():.3f}..{per_position.max():.3f}"
    )
    assert spread <= LOGIT_TOLERANCE
    assert per_position.std() > 100 * LOGIT_TOLERANCE  # a constant per position, not one for all


def test_the_default_model_is_unprocessed_and_matches_transformers(checkpoint, unprocessed, ids):
    from safetensors.torch import load_file
    from transformers import GPT2LMHeadModel

    processed = ours(checkpoint, CASES["all four"])  # loaded from the same files: must not touch them or others
    stored = load_file(checkpoint / "model.safetensors")
    state = unprocessed.state_dict()
    assert unprocessed.config.tie_word_embeddings and unprocessed.lm_head.weight is unprocessed.wte.weight
    assert unprocessed.lm_head.bias is None
    conv1d = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # stored [in, out] (transformers' Conv1D)
    assert all(torch.equal(state[n], stored[n].T if n.endswith(conv1d) else stored[n]) for n in state if n in stored)
    assert processed.lm_head.bias is not None and not processed.config.tie_word_embeddings
    reference = GPT2LMHeadModel.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        difference = (unprocessed(ids) - reference(ids).logits).abs().max().item()
        processed_moved = (processed(ids) - reference(ids).logits).abs().max().item()
    print(f"\ndefault model against transformers: {difference:.2e} (the processed one: {processed_moved:.2e})")
    assert difference <= LOGIT_TOLERANCE < processed_moved


def test_transformer_lens_keywords_are_process_true(checkpoint, unprocessed, ids):
    """from_pretrained(name, fold_ln=True, center_writing_weights=True, center_unembed=True,
    fold_value_biases=True), as TransformerLens users write it, is process=True; a step named False is left
    out, the others applied, as in TransformerLens."""
    keywords = dict(fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True)
    by_keywords, by_process = (
        GPT2.from_pretrained(checkpoint, **keywords),
        GPT2.from_pretrained(checkpoint, process=True),
    )
    for (name, a), (_, b) in zip(by_keywords.state_dict().items(), by_process.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    no_fold = GPT2.from_pretrained(checkpoint, fold_ln=False)
    expected = GPT2.from_pretrained(checkpoint, process=Processing(fold_ln=False))
    assert torch.equal(no_fold.h[0].attn.c_attn.weight, expected.h[0].attn.c_attn.weight)
    assert torch.equal(no_fold.h[0].ln_1.weight, unprocessed.h[0].ln_1.weight)  # not folded
    with pytest.raises(ValueError, match="not both"):
        GPT2.from_pretrained(checkpoint, process=True, fold_ln=True)
