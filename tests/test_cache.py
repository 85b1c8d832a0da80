"""minigpt2/cache.py: the KV cache. Filled in pieces it gives the logits of one forward pass (for any split,
as a property), and it follows the beams in place, copying only the rows that change."""

from __future__ import annotations

import torch
from conftest import random_prompt
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from minigpt2 import GPT2, GPT2Config


def test_cache_in_pieces_equals_one_full_forward(random_model):
    model = random_model
    ids = random_prompt(length=12)
    full = model(ids)
    cache = model.new_cache(batch_size=2)
    pieces = [model(ids[:, a:b], cache) for a, b in ((0, 5), (5, 6), (6, 10), (10, 12))]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)


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


class CountCopies(TorchDispatchMode):
    """Bytes written by the tensor operations run inside it."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.__name__.startswith(("copy_", "clone", "index_put", "index_select")):
            self.bytes += out.numel() * out.element_size()
        return out


def test_the_cache_follows_the_beams_in_place_copying_only_rows_that_change(tiny):
    model, _ = tiny
    cache = model.new_cache(8, 40)
    cache.keys.normal_()
    cache.values.normal_()
    cache.length = 30
    row_bytes = 2 * cache.keys[:, 0, :, :30].numel() * cache.keys.element_size()  # keys and values of one row
    storage = cache.keys.data_ptr()
    for parents, rows_written in [
        (list(range(8)), 0),  # every beam kept its place: nothing moves
        ([0, 0, 2, 3, 4, 5, 6, 7], 1),  # beam 1 continues beam 0: one row
        ([1, 0, 2, 3, 4, 5, 6, 7], 3),  # two beams swap: one row set aside, two written
        ([0, 0, 0, 0, 4, 4, 4, 4], 6),
    ]:
        expected_keys = cache.keys[:, parents].clone()
        with CountCopies() as counted:
            cache.reorder(parents)
        assert torch.equal(cache.keys[:, :, :, :30], expected_keys[:, :, :, :30])
        assert counted.bytes == rows_written * row_bytes, parents
    assert cache.keys.data_ptr() == storage  # the same memory throughout: reordered in place
