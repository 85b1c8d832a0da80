"""minigpt2/generation/assisted.py: assisted and prompt-lookup decoding. Greedy with any drafter is plain
greedy, over 200 tokens, and transformers' assistant_model= / prompt_lookup_num_tokens= output; speculative
sampling keeps the model's distribution; the requests it refuses."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_INIT, worst_deviation
from transformers import GPT2Config as HFConfig
from transformers import GPT2LMHeadModel

from minigpt2 import GPT2
from minigpt2.generation.assisted import LookupDraft
from minigpt2.testing.checkpoints import write_checkpoint

NEW = 200
PROMPT = torch.tensor([[5, 17, 42, 9, 88, 3, 5, 17]])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 4-layer target with a 256-token context; drafts: its own first layer and head (a draft that often agrees)
    and an unrelated 1-layer random model of the same vocabulary. Each as (minigpt2, transformers)."""
    root = tmp_path_factory.mktemp("assisted")
    target = write_checkpoint(root / "target", n_layer=4, n_positions=256, initializer_range=TINY_INIT)
    hf_target = GPT2LMHeadModel.from_pretrained(target).eval()
    with torch.no_grad():  # blocks past the first write little, as in a trained model whose early layers predict well
        for block in hf_target.transformer.h[1:]:
            for projection in (block.attn.c_proj, block.mlp.c_proj):
                projection.weight.mul_(0.05)
                projection.bias.mul_(0.05)
    hf_target.save_pretrained(target)
    first = GPT2LMHeadModel(HFConfig(**{**hf_target.config.to_dict(), "n_layer": 1})).eval()
    first.load_state_dict(hf_target.state_dict(), strict=False)  # block 0, embeddings, final norm
    torch.manual_seed(1)
    unrelated = GPT2LMHeadModel(
        HFConfig(vocab_size=hf_target.config.vocab_size, n_positions=256, n_embd=32, n_layer=1, n_head=2)
    ).eval()
    drafts = {}
    for name, hf in (("first layer", first), ("unrelated", unrelated)):
        hf.save_pretrained(root / name)
        drafts[name] = (GPT2.from_pretrained(root / name), hf)
    return (GPT2.from_pretrained(target), hf_target), drafts


def rounds(model, **options):
    """(sequences, [(drafted, accepted) per round]) of a greedy assisted generation."""
    steps, kept = model.stream(PROMPT, max_new_tokens=NEW, eos_token_id=None, **options), []
    while True:
        try:
            step = next(steps)
        except StopIteration as end:
            return end.value[0], kept
        if step.drafted is not None:
            kept.append((step.drafted, step.accepted))


@pytest.mark.parametrize("drafter", ["first layer", "unrelated", "prompt lookup"])
def test_greedy_assisted_is_plain_greedy_and_transformers(models, drafter):
    (model, hf_model), drafts = models
    plain = model.generate(PROMPT, max_new_tokens=NEW, eos_token_id=None)
    if drafter == "prompt lookup":
        ours, kept = rounds(model, prompt_lookup_num_tokens=10)
        theirs = hf_model.generate(PROMPT, max_new_tokens=NEW, do_sample=False, prompt_lookup_num_tokens=10)
    else:
        draft, hf_draft = drafts[drafter]
        k = 20 if drafter == "first layer" else 4  # transformers' default; fewer for a draft that is mostly wrong
        ours, kept = rounds(model, assistant_model=draft, num_assistant_tokens=k)
        theirs = hf_model.generate(
            PROMPT, max_new_tokens=NEW, do_sample=False, assistant_model=hf_draft, num_assistant_tokens=k
        )
    drafted, accepted = sum(d for d, _ in kept), sum(a for _, a in kept)
    print(f"{drafter}: {len(kept)} rounds for {NEW} tokens, {accepted}/{drafted} drafts accepted")
    assert torch.equal(ours, plain)
    assert torch.equal(ours, theirs)
    assert len(kept) < NEW or drafter == "unrelated"  # a useful drafter saves forward passes


def test_the_heuristic_schedule_and_a_caller_draft_length_keep_the_tokens(models):
    (model, _), drafts = models
    plain = model.generate(PROMPT, max_new_tokens=NEW, eos_token_id=None)
    draft = drafts["first layer"][0]
    for options in (dict(num_assistant_tokens_schedule="heuristic"), dict(num_assistant_tokens=3)):
        ours, kept = rounds(model, assistant_model=draft, **options)
        assert torch.equal(ours, plain), options
        if "num_assistant_tokens" in options:
            assert max(d for d, _ in kept) <= 3


def test_assisted_stops_at_eos_and_runs_hooks(models):
    (model, _), drafts = models
    plain = model.generate(PROMPT, max_new_tokens=40, eos_token_id=None)[0, PROMPT.size(1) :].tolist()
    eos = plain[17]
    stopped = model.generate(PROMPT, max_new_tokens=40, eos_token_id=eos, prompt_lookup_num_tokens=5)
    assert stopped[0, PROMPT.size(1) :].tolist() == plain[: plain.index(eos) + 1]
    vector = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(0)) * 4
    hooks = {"blocks.2.hook_resid_post": lambda x: x + vector}
    steered = model.generate(PROMPT, max_new_tokens=60, eos_token_id=None, hooks=hooks)
    assisted = model.generate(
        PROMPT, max_new_tokens=60, eos_token_id=None, hooks=hooks, assistant_model=drafts["first layer"][0]
    )
    assert torch.equal(steered, assisted)


def test_speculative_sampling_keeps_the_models_distribution(models):
    """The first new token, drafted by the model itself with its final norm's scale doubled (the same top k,
    a sharper distribution q) and accepted or redrawn by speculative sampling's rule, is distributed as
    the model's own top-k softmax p."""
    (model, _), _ = models
    draft = copy.deepcopy(model)
    with torch.no_grad():
        draft.ln_f.weight.mul_(2.0)  # logits doubled: the final norm has no bias at init
    options = dict(do_sample=True, top_k=8, max_new_tokens=2, eos_token_id=None)
    with torch.inference_mode():
        logits = model(PROMPT)[0, -1]
    kth = logits.topk(8).values[-1]
    expected = logits.masked_fill(logits < kth, float("-inf")).softmax(dim=-1)
    draws, accepted = 600, 0
    frequency = torch.zeros_like(expected)
    for seed in range(draws):
        steps = model.stream(PROMPT, assistant_model=draft, seed=seed, **options)
        step = next(steps)
        accepted += step.accepted
        frequency[step.tokens[0]] += 1 / draws
    deviation = worst_deviation(expected, frequency, draws)
    print(f"worst deviation over {draws} draws: {deviation:.2f} standard errors; {accepted} drafts accepted")
    assert 0 < accepted < draws  # both branches of the rule ran
    assert deviation < 4.5


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_beams=2), "assisted decoding runs one row"),
        (dict(use_cache=False), "checks drafts through the KV cache"),
        (dict(num_assistant_tokens=0), "num_assistant_tokens must be a whole number of at least 1"),
        (dict(num_assistant_tokens_schedule="fast"), "num_assistant_tokens_schedule must be"),
    ],
)
def test_bad_assisted_requests(models, options, message):
    (model, _), drafts = models
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPT, max_new_tokens=5, assistant_model=drafts["first layer"][0], **options)


def test_an_assistant_with_another_vocabulary_is_refused(models, random_model):
    (model, _), _ = models
    with pytest.raises(ValueError, match="the assistant's vocabulary"):
        model.generate(PROMPT, max_new_tokens=5, assistant_model=random_model)


def test_lookup_drafts_what_followed_the_earliest_earlier_match_of_the_longest_tail():
    """The tensor search against the plain loops it replaced, over random short sequences of few tokens
    (so that matches of every length, and none, occur), every budget included."""

    def by_loops(row, ngram, tokens, budget):
        for n in range(min(ngram, len(row) - 1), 0, -1):
            for start in range(len(row) - n):
                if row[start : start + n] == row[-n:] and (follow := row[start + n : start + n + min(tokens, budget)]):
                    return follow
        return []

    g = torch.Generator().manual_seed(0)
    for case in range(400):
        length, ngram, tokens = 1 + case % 13, 1 + case % 3, 1 + case % 5
        row = torch.randint(0, 4, (1, length), generator=g)
        draft = LookupDraft(SimpleNamespace(prompt_lookup_num_tokens=tokens, max_matching_ngram_size=ngram))
        for budget in (0, 1, 3, 10):
            assert draft.propose(row, budget) == by_loops(row[0].tolist(), ngram, tokens, budget), (row, budget)
