"""Weights in every layout transformers writes: shards (.safetensors and .bin, local and from the hub),
half-precision files, resized vocabularies, the Korean GPT-2's layout; each against transformers."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import LOAD_AND_GENERATE, LOGIT_TOLERANCE, run_python
from safetensors.torch import load_file
from test_tokenizer_files import KOGPT2_CARD
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from minigpt2 import GPT2, CheckpointError, Tokenizer
from minigpt2.checkpoint import resolve

NEW_TOKENS = 30


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
    from conftest import TINY_INIT
    from minigpt2.parity.checkpoints import write_checkpoint

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


def test_a_shard_index_that_points_outside_its_folder_is_refused(finetuned_checkpoint, tmp_path):
    target = tmp_path / "bad-index"
    shutil.copytree(finetuned_checkpoint, target)
    (target / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"wte.weight": "../x"}}))
    with pytest.raises(CheckpointError, match="names files outside its own folder"):
        GPT2.from_pretrained(target)
    (target / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="is not a readable shard index"):
        GPT2.from_pretrained(target)


def test_sharded_hub_repo_fetches_exactly_the_shards_its_index_names(finetuned_checkpoint, fake_hub):
    hub, env = fake_hub
    hub.add("someone/finetuned", "c" * 40, {p.name: p for p in finetuned_checkpoint.iterdir() if p.is_file()})
    result = run_python("-c", LOAD_AND_GENERATE, "someone/finetuned", "<|user|>Once upon a time", env=env)
    assert result.returncode == 0, result.stderr
    fetched = [path.rsplit("/", 1)[1] for method, path in hub.requests if method == "GET" and "/resolve/" in path]
    shards = set(json.loads((finetuned_checkpoint / "model.safetensors.index.json").read_text())["weight_map"].values())
    weights = [f for f in fetched if f.startswith(("model", "pytorch_model"))]
    assert weights[0] == "model.safetensors.index.json"  # no single file in this repo: its index, then
    assert sorted(weights[1:]) == sorted(shards)  # each shard once, and nothing else
    assert len(fetched) == len(set(fetched))
    local = GPT2.from_pretrained(finetuned_checkpoint)
    ids = torch.tensor([Tokenizer.from_pretrained(finetuned_checkpoint).encode("<|user|>Once upon a time")])
    assert json.loads(result.stdout) == local.generate(ids, max_new_tokens=12).tolist()
