"""minigpt2/loading/: reading weights and config.json into a model. Both file layouts, .bin (and refusing a
pickle that would run code), shards in .safetensors and .bin, half-precision files, resized vocabularies and
the Korean GPT-2's layout (each against transformers), dtypes and devices, the [out, in] layout conversions
write, no random init and bounded peak memory while loading, and broken checkpoints that say what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import KOGPT2_CARD, LOGIT_TOLERANCE, TINY_INIT, run_python
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from minigpt2 import GPT2, CheckpointError, Tokenizer
from minigpt2.checkpoint import resolve
from minigpt2.testing.checkpoints import write_checkpoint

NEW_TOKENS = 30


def copy_checkpoint(source, target):
    shutil.copytree(source, target)
    return target


def test_both_layouts_and_a_bare_safetensors_file_load_the_same_weights(tiny_checkpoint, tiny, tmp_path):
    official, _ = tiny  # GPT2.from_pretrained(tiny_checkpoint)
    bare_file = GPT2.from_pretrained(tiny_checkpoint / "model.safetensors")
    stored = load_file(tiny_checkpoint / "model.safetensors")
    # Conv1D stores [in, out]; ours is nn.Linear's [out, in].
    assert torch.equal(official.h[1].mlp.c_fc.weight, stored["h.1.mlp.c_fc.weight"].t())
    assert torch.equal(official.h[0].attn.c_attn.bias, stored["h.0.attn.c_attn.bias"])  # a weight, not the mask
    for a, b in zip(official.state_dict().values(), bare_file.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not official.training


def test_pytorch_model_bin_loads_when_there_is_no_safetensors(tiny_checkpoint, tiny, tmp_path):
    target = copy_checkpoint(tiny_checkpoint, tmp_path / "bin")
    state = load_file(target / "model.safetensors")
    (target / "model.safetensors").unlink()
    torch.save(state, target / "pytorch_model.bin")
    from_bin = GPT2.from_pretrained(target)
    from_safetensors, _ = tiny
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(from_bin(ids), from_safetensors(ids))


class RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_a_bin_that_would_run_code_is_refused(tiny_checkpoint, tmp_path, capsys):
    target = copy_checkpoint(tiny_checkpoint, tmp_path / "evil")
    (target / "model.safetensors").unlink()
    torch.save({"wte.weight": RunsCode()}, target / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file"):
        GPT2.from_pretrained(target)
    assert "this pickle ran code" not in capsys.readouterr().out


def test_loading_builds_no_random_weights(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(GPT2, "_init_weights", lambda *a: pytest.fail("random init ran while loading"))
    model = GPT2.from_pretrained(tiny_checkpoint)
    assert not any(p.is_meta for p in model.parameters())


def test_dtype_and_device(tiny_checkpoint, tiny):
    model = GPT2.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    reference, _ = tiny  # fp32
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        fp32 = reference(ids)
        diff = (model(ids).float() - fp32).abs().max().item()
    relative = diff / fp32.abs().max().item()
    print(f"\nbf16 vs fp32: max abs logit difference {diff:.3e}, {relative:.1%} of the largest logit")
    assert relative < 0.03  # bf16 keeps 8 bits of mantissa: about 0.4% per rounding, over a dozen ops


def shard(checkpoint, target, shards: int):
    """checkpoint's model.safetensors as `shards` files and the index that names them, as save_pretrained writes."""
    target.mkdir()
    shutil.copy(checkpoint / "config.json", target / "config.json")
    state = load_file(checkpoint / "model.safetensors")
    names, weight_map = sorted(state), {}
    for n in range(shards):
        part = names[n::shards]
        filename = f"model-{n + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, target / filename, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, filename))
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return target


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from Linux's /proc")
@pytest.mark.parametrize("layout", ["one file", "4 shards"])
def test_peak_memory_while_loading_gpt2_medium_shape(medium_checkpoint, tmp_path, layout):
    weights_bytes = sum(
        t.numel() * t.element_size()
        for n, t in load_file(medium_checkpoint / "model.safetensors").items()
        if not n.endswith("attn.bias")
    )
    if layout == "4 shards":
        medium_checkpoint = shard(medium_checkpoint, tmp_path / "sharded", 4)
    # VmHWM is this process's peak resident memory (ru_maxrss would carry the parent's peak over exec).
    code = f"""
import re, torch, minigpt2
peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
before = peak()
model = minigpt2.GPT2.from_pretrained({str(medium_checkpoint)!r})
with torch.no_grad():
    model(torch.tensor([[1, 2, 3]]))  # touch every weight once
print(peak() - before)
"""
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.split()[-1])
    gib = 2**30
    print(
        f"\n{layout}: peak memory growth on load + forward: {growth / gib:.2f} GiB for {weights_bytes / gib:.2f} GiB"
        " of weights"
    )
    assert growth <= 1.2 * weights_bytes


def write_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def rewrite_weights(directory, change):
    state = load_file(directory / "model.safetensors")
    change(state)
    save_file(state, directory / "model.safetensors")


@pytest.mark.parametrize(
    "breakage, error, message",
    [
        (
            lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
            CheckpointError,
            "not a readable safetensors file",
        ),
        (
            lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64),
            CheckpointError,
            "not a readable safetensors file",
        ),
        (lambda d: write_config(d, model_type="llama"), CheckpointError, "describes a 'llama' model, not GPT-2"),
        (lambda d: write_config(d, activation_function="prelu"), CheckpointError, "'prelu', which has learned"),
        (lambda d: write_config(d, activation_function="gelu_99"), CheckpointError, "'gelu_99', which is unknown"),
        (lambda d: write_config(d, add_cross_attention=True), CheckpointError, "asks for cross-attention"),
        (lambda d: (d / "config.json").write_text("{not json"), CheckpointError, "not a readable JSON config"),
        (lambda d: (d / "config.json").unlink(), CheckpointError, "needs its config.json"),
        (
            lambda d: (d / "model.safetensors").unlink(),
            CheckpointError,
            "has none of model.safetensors, model.safetensors.index.json, pytorch_model.bin",
        ),
        (lambda d: write_config(d, n_layer=3), CheckpointError, "holds 2 blocks, and .*config.json says n_layer 3"),
        (
            lambda d: write_config(d, n_embd=96, n_head=4),
            CheckpointError,
            "wrong shape: wte.weight \\(1000, 64\\) \\(config says \\(1000, 96\\)\\)",
        ),
        (
            lambda d: rewrite_weights(d, lambda s: s.pop("h.1.mlp.c_proj.bias")),
            CheckpointError,
            "missing: h.1.mlp.c_proj.bias",
        ),
        (lambda d: rewrite_weights(d, lambda s: s.update(extra=torch.zeros(1))), CheckpointError, "unexpected: extra"),
    ],
)
def test_broken_checkpoints_say_what_is_wrong(tiny_checkpoint, tmp_path, breakage, error, message):
    target = copy_checkpoint(tiny_checkpoint, tmp_path / "broken")
    breakage(target)
    with pytest.raises(error, match=message):
        GPT2.from_pretrained(target)


@pytest.mark.parametrize("device, message", [("cuda:7", "not available|does not exist"), ("tpu", "unknown device")])
def test_devices_that_are_not_there(tiny_checkpoint, device, message):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ValueError, match=message):
        GPT2.from_pretrained(tiny_checkpoint, device=device)


def test_weights_converted_on_load_are_in_nn_linear_order(tiny_checkpoint, tiny):
    """A conversion copies anyway; it writes [out, in] in order, which torch's bf16 kernels read fastest.
    fp32 is not copied: its projections stay transposed views of the file."""
    bf16 = GPT2.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    fp32, _ = tiny
    assert bf16.h[0].mlp.c_fc.weight.is_contiguous() and not fp32.h[0].mlp.c_fc.weight.is_contiguous()
    assert torch.equal(bf16.h[0].mlp.c_fc.weight, fp32.h[0].mlp.c_fc.weight.bfloat16())


# ---- every layout transformers writes ----


def logits_and_greedy(model, input_ids, eos, pad):
    """(logits, greedy continuation) from a minigpt2 model or a transformers one."""
    with torch.no_grad():
        if isinstance(model, GPT2):
            return model(input_ids), model.generate(input_ids, max_new_tokens=NEW_TOKENS, eos_token_id=eos)
        logits = model(input_ids).logits
        out = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        return logits, out


def assert_matches_transformers(path, text, *, dtype=None, tolerance=LOGIT_TOLERANCE):
    ours, tokenizer = GPT2.from_pretrained(path, dtype=dtype), Tokenizer.from_pretrained(path)
    reference = GPT2LMHeadModel.from_pretrained(path, dtype=dtype or "auto").eval()
    input_ids = torch.tensor([tokenizer.encode(text)])
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    our_logits, our_tokens = logits_and_greedy(ours, input_ids, eos, pad)
    their_logits, their_tokens = logits_and_greedy(reference, input_ids, eos, pad)
    diff = (our_logits.float() - their_logits.float()).abs().max().item()
    print(f"\n{path.name}: max abs logit difference {diff:.3e}")
    assert diff <= tolerance
    n = min(our_tokens.size(1), their_tokens.size(1))  # transformers stops at eos; minigpt2 pads after it
    assert our_tokens[:, :n].tolist() == their_tokens[:, :n].tolist()
    return ours


def test_transformers_5_fine_tune_sharded_and_resized(finetuned_checkpoint):
    assert len(resolve(finetuned_checkpoint).weight_files()) > 1  # shards, found through model.safetensors.index.json
    ours = assert_matches_transformers(finetuned_checkpoint, "<|user|>Once upon a time<|assistant|>")
    tokenizer = Tokenizer.from_pretrained(finetuned_checkpoint)
    assert ours.config.vocab_size % 64 == 0 and ours.config.vocab_size > tokenizer.vocab_size > 1000
    # fp32 from safetensors shards is not copied: each projection is a transposed view of the mapped file.
    assert not ours.h[0].mlp.c_fc.weight.is_contiguous()


def test_sharded_bin_loads_the_same_weights(finetuned_checkpoint, tmp_path):
    target = tmp_path / "bin-shards"
    target.mkdir()
    shutil.copy(finetuned_checkpoint / "config.json", target / "config.json")
    index = json.loads((finetuned_checkpoint / "model.safetensors.index.json").read_text())
    weight_map = {}
    for n, shard in enumerate(sorted(set(index["weight_map"].values())), 1):
        name = f"pytorch_model-{n:05d}-of-00099.bin"
        state = load_file(finetuned_checkpoint / shard)
        torch.save(state, target / name)
        weight_map.update(dict.fromkeys(state, name))
    (target / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    from_bin, from_safetensors = GPT2.from_pretrained(target), GPT2.from_pretrained(finetuned_checkpoint)
    for (name, a), b in zip(from_bin.state_dict().items(), from_safetensors.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_files_keep_their_dtype(tmp_path, dtype):
    path = write_checkpoint(tmp_path / "half", layout="finetuned", dtype=dtype, initializer_range=TINY_INIT)
    ours = GPT2.from_pretrained(path)
    assert {p.dtype for p in ours.parameters()} == {dtype}  # dtype=None keeps what is stored
    assert ours.h[0].mlp.c_fc.weight.is_contiguous()  # half precision is written [out, in], for torch's kernels
    assert {p.dtype for p in GPT2.from_pretrained(path, dtype=torch.float32).parameters()} == {torch.float32}
    # Against transformers in the same dtype: within the rounding of 8 (bf16) or 11 (fp16) bits of mantissa.
    with torch.no_grad():
        ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
        ours_logits = ours(ids).float()
        theirs = GPT2LMHeadModel.from_pretrained(path).eval()(ids).logits.float()
    relative = (ours_logits - theirs).abs().max().item() / theirs.abs().max().item()
    print(f"\n{dtype} file: {relative:.2%} of the largest logit from transformers in the same dtype")
    assert relative < (0.03 if dtype == torch.bfloat16 else 0.005)


def test_kogpt2_layout_generates_as_transformers(kogpt2_checkpoint):
    assert [p.name for p in resolve(kogpt2_checkpoint).weight_files()] == ["pytorch_model.bin"]
    assert_matches_transformers(kogpt2_checkpoint, "옛날 옛적에 작은 마을에")
    ours = Tokenizer.from_pretrained(kogpt2_checkpoint)
    card = PreTrainedTokenizerFast.from_pretrained(kogpt2_checkpoint, **KOGPT2_CARD)
    assert ours.encode("옛날 옛적에 작은 마을에") == card.encode("옛날 옛적에 작은 마을에")
