"""minigpt2/loading/kernels.py and kernel_choice.py: fast=True times each candidate kernel per matrix shape and
row count once per machine, keeps the verdict in a file a user can read and delete, and uses it; every
candidate computes what F.linear computes, picks the same greedy tokens and keeps gradients."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import LOGIT_TOLERANCE

from minigpt2 import GPT2
from minigpt2.loading import kernel_choice
from minigpt2.loading.kernels import KERNELS, ROW_COUNTS, FastLinear
from minigpt2.machine import machine_key

PROMPTS = ["Once upon a time", "Hi", "안녕하세요 👋"]


@pytest.fixture(autouse=True)
def own_record(tmp_path, monkeypatch):
    """Each test times into a record of its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "minigpt2" / "kernels.json"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("rows", [1, 4, 16, 300])
def test_each_kernel_computes_f_linear(kernel, rows, dtype):
    g = torch.Generator().manual_seed(rows)
    module = FastLinear(256, 384, dtype=dtype)
    module.weight.data = (torch.randn(384, 256, generator=g) / 16).to(dtype)  # [out, in] in order
    module.bias.data = torch.randn(384, generator=g).to(dtype)
    module.kernels = (kernel,) * len(ROW_COUNTS)
    x = torch.randn(1, rows, 256, generator=g).to(dtype)
    with torch.inference_mode():
        reference = F.linear(x, module.weight, module.bias)
        try:
            fast = module(x)
        except RuntimeError as error:  # oneDNN has no bf16 kernels on an AVX2-only CPU: the chooser skips it
            pytest.skip(f"{kernel} in {dtype} on this CPU: {str(error).splitlines()[0]}")
        used = module.kernel_for(x)
    if rows > ROW_COUNTS[-1]:  # a prompt's rows: transformers' kernel
        assert used is F.linear and torch.equal(fast, reference)
    diff = (fast.float() - reference.float()).abs().max().item()
    print(f"\n{kernel}, {rows} rows, {dtype}: max abs difference from F.linear {diff:.1e}")
    assert fast.shape == reference.shape and diff <= (1e-5 if dtype == torch.float32 else 0.05)


def test_fast_times_once_per_machine_keeps_the_verdict_and_uses_it(tiny_checkpoint, tiny, own_record, capsys):
    default, tokenizer = tiny
    model = GPT2.from_pretrained(tiny_checkpoint, fast=True)
    assert "timing the fast kernels" in capsys.readouterr().err
    record = json.loads(own_record.read_text())
    verdicts = record[machine_key()]
    shapes = kernel_choice.shape_groups(model)
    assert set(verdicts) == set(shapes) and len(shapes) == 5  # c_attn, attn c_proj, c_fc, mlp c_proj, the head
    for key, modules in shapes.items():
        verdict = verdicts[key]
        for i, name in enumerate(verdict["chosen"]):  # the fastest of the timed candidates, per row count
            assert verdict["ms"][name][i] == min(ms[i] for ms in verdict["ms"].values())
        assert all(module.kernels == tuple(verdict["chosen"]) for module in modules)
    lines = kernel_choice.describe_kernels(model)
    assert len(lines) == 5 and all("1 rows" in line and "ms a pass" in line for line in lines)
    print("\n" + "\n".join(lines))

    # A second load reads the verdict and times nothing; a verdict edited by hand is followed.
    first = next(iter(verdicts))
    verdicts[first]["chosen"] = ["F.linear"] * len(ROW_COUNTS)
    own_record.write_text(json.dumps(record))
    again = GPT2.from_pretrained(tiny_checkpoint, fast=True)
    assert "timing" not in capsys.readouterr().err
    assert all(m.kernels == ("F.linear",) * len(ROW_COUNTS) for m in kernel_choice.shape_groups(again)[first])

    # A damaged record is timed again; deleting it times again.
    own_record.write_text("{not json")
    GPT2.from_pretrained(tiny_checkpoint, fast=True)
    assert "timing" in capsys.readouterr().err and json.loads(own_record.read_text())

    # A record from before a candidate was added is timed again, so that the new one is weighed too.
    record = json.loads(own_record.read_text())
    for verdict in record[machine_key()].values():
        verdict["ms"].pop(list(KERNELS)[1], None)
        verdict["failed"].pop(list(KERNELS)[1], None)
    own_record.write_text(json.dumps(record))
    GPT2.from_pretrained(tiny_checkpoint, fast=True)
    assert "timing" in capsys.readouterr().err
    assert all(
        set(v["ms"]) | set(v["failed"]) == set(KERNELS)
        for v in json.loads(own_record.read_text())[machine_key()].values()
    )


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_each_kernel_picks_the_same_greedy_tokens_and_keeps_gradients(tiny_checkpoint, tiny, kernel, own_record):
    default, tokenizer = tiny
    model = GPT2.from_pretrained(tiny_checkpoint, fast=True)
    for module in kernel_choice.shape_groups(model).values():
        for m in module:
            m.kernels = (kernel,) * len(ROW_COUNTS)
    input_ids, attention_mask = tokenizer.encode_batch(PROMPTS)
    options = dict(attention_mask=attention_mask, max_new_tokens=25, eos_token_id=tokenizer.eos_token_id)
    plain = default.generate(input_ids, use_cache=False, **options)
    assert torch.equal(model.generate(input_ids, **options), plain)
    with torch.inference_mode():
        ids = torch.tensor([tokenizer.encode(PROMPTS[0])])
        diff = (model(ids) - default(ids)).abs().max().item()
    print(f"\nfast=True, {kernel} at every row count, vs the default: max abs logit difference {diff:.1e}")
    assert diff <= LOGIT_TOLERANCE
    model(input_ids)[0, -1].logsumexp(-1).backward()  # the kernels have no backward: F.linear takes over
    assert all(p.grad is not None for p in model.parameters())


def test_fast_lays_weights_out_in_order_and_an_unwritable_record_only_says_so(
    tiny_checkpoint, tiny, tmp_path, monkeypatch, capsys
):
    """fast=True copies the projections to [out, in] in order, the layout the kernels read fastest; the
    default keeps the file's transposed view. A record that cannot be written leaves the choice to this load."""
    default, _ = tiny
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a file"))  # no folder can be made in it
    laid_out = GPT2.from_pretrained(tiny_checkpoint, fast=True)
    weight, view = laid_out.h[1].mlp.c_proj.weight, default.h[1].mlp.c_proj.weight
    assert isinstance(laid_out.h[1].mlp.c_proj, FastLinear) and type(default.h[1].mlp.c_proj) is torch.nn.Linear
    assert weight.is_contiguous() and not view.is_contiguous() and torch.equal(weight, view)
    assert "could not keep what was timed" in capsys.readouterr().err
