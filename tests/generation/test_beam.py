"""minigpt2/generation/beam.py: beam search against transformers' generate, token for token and score for
score, with beams that end early, and its memory: eight beams hold the cache of eight plain rows.
(The cache's in-place reorder itself: test_cache.py.)"""

from __future__ import annotations

import itertools

import pytest
import torch

NEW_TOKENS = 20


@pytest.fixture(scope="module")
def models(padded_batch):
    """As padded_batch, with its liked token as the eos: so that beams end early."""
    model, reference, _, input_ids, attention_mask, liked = padded_batch
    return model, reference, input_ids, attention_mask, liked


def both(models, **options):
    """(minigpt2's GenerateOutput, transformers' output) for the same request."""
    model, reference, input_ids, attention_mask, _ = models
    ours = model.generate(input_ids, attention_mask=attention_mask, output_scores=True, **options)
    with torch.no_grad():
        theirs = reference.generate(
            input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            pad_token_id=options.get("eos_token_id") or 0,
            **options,
        )
    return ours, theirs


@pytest.mark.parametrize(
    "num_beams, length_penalty, early_stopping, with_eos",
    list(itertools.product([2, 4, 8], [0.5, 1.0, 2.0], [False, True, "never"], [True, False])),
)
def test_beam_search_matches_transformers(models, num_beams, length_penalty, early_stopping, with_eos):
    eos = models[4] if with_eos else None
    options = dict(
        num_beams=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        max_new_tokens=NEW_TOKENS,
        num_return_sequences=min(2, num_beams),
        eos_token_id=eos,
    )
    ours, theirs = both(models, **options)
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, rtol=0, atol=1e-4)


def test_beams_end_at_eos_in_these_tests(models):
    """The comparisons above include beams that end early and are padded, not only full-length ones."""
    ours, _ = both(models, num_beams=4, max_new_tokens=NEW_TOKENS, eos_token_id=models[4])
    new = ours.sequences[:, models[2].size(1) :]
    assert (new == models[4]).any() and ours.sequences.size(1) < models[2].size(1) + NEW_TOKENS + 1


def test_one_beam_is_greedy_and_beams_can_beat_it(models):
    model, _, input_ids, attention_mask, _ = models
    options = dict(attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, output_scores=True)
    greedy = model.generate(input_ids, **options)
    assert torch.equal(model.generate(input_ids, num_beams=1, **options).sequences, greedy.sequences)
    beams = model.generate(input_ids, num_beams=4, length_penalty=0.0, **options)
    # length_penalty 0: a beam's score is its summed log-probability, never below greedy's own.
    assert (beams.sequences_scores >= greedy.token_logprobs.sum(dim=1) - 1e-4).all()


def test_bad_beam_requests(models):
    model, _, input_ids, _, _ = models
    for options, message in [
        (dict(num_beams=2, num_return_sequences=3), r"num_return_sequences \(3\) can be at most num_beams \(2\)"),
        (dict(num_beams=2, do_sample=True), "not both"),
        (dict(num_beams=0), "num_beams must be a whole number of at least 1"),
        (dict(num_beams=2, early_stopping="sometimes"), "early_stopping must be True, False or 'never'"),
        (dict(num_beams=2, compile=True), "beam search runs without it"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.generate(input_ids, max_new_tokens=3, **options)


BEAM_MEMORY_PROBE = """
import re, sys, torch
from minigpt2 import GPT2, GPT2Config
peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
torch.manual_seed(0)
config = GPT2Config(vocab_size=1000, n_positions=1024, n_embd=256, n_layer=8, n_head=4, eos_token_id=None)
model = GPT2(config).eval()
prompt = torch.randint(0, 1000, (1, 64))
model.generate(prompt[:, :8], max_new_tokens=4, num_beams=8)  # warm up the allocator and the kernels
before = peak()
if sys.argv[1] == "beams":
    model.generate(prompt, max_new_tokens=184, num_beams=8)
else:  # eight rows of greedy decoding: the same cache, the same prompt work, no beams
    model.generate(prompt.repeat(8, 1), max_new_tokens=184)
print(peak() - before)
"""


@pytest.mark.slow
def test_eight_beams_take_the_memory_of_eight_plain_rows(tmp_path):
    """Peak memory of 8-beam search over 248 tokens against 8 rows of greedy decoding, in fresh processes:
    the cache of 8 rows and little else. A reorder that copied the whole cache each step would hold two."""
    from pathlib import Path

    from conftest import run_python

    if not Path("/proc/self/status").exists():
        pytest.skip("reads peak memory from Linux's /proc")
    growth = {}
    for mode in ("beams", "rows"):
        result = run_python("-c", BEAM_MEMORY_PROBE, mode)
        assert result.returncode == 0, result.stderr
        growth[mode] = int(result.stdout.split()[-1])
    row = 2 * 8 * 4 * 248 * 64 * 4  # one row's keys and values: layers x heads x tokens x head_dim x fp32
    print(
        f"\npeak memory growth: 8 beams {growth['beams'] / 2**20:.0f} MiB ({growth['beams'] / row:.2f}x one row's "
        f"cache), 8 greedy rows {growth['rows'] / 2**20:.0f} MiB ({growth['rows'] / row:.2f}x)"
    )
    assert growth["beams"] <= growth["rows"] + row  # at most one row's worth more than eight plain rows
