"""minigpt2/loading/lora.py: PEFT LoRA adapters made with peft itself on a random base, merged at load, against
PeftModel (unmerged: base + B(A(x)) * scale) for r 4 and 16, with and without fan_in_fan_out; kept separate
(merge_lora=False), equal to merged, each branch at its hook point; the base named by adapter_config.json or
given; the loop script and the parity report; bad adapters refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from checkpoint_kinds import make_adapter
from conftest import run_cli
from test_loading import RunsCode

from minigpt2 import GPT2, CheckpointError, Tokenizer, parity
from minigpt2.lora import LoRALinear
from minigpt2.parity.reference import reference_greedy
from minigpt2.testing.checkpoints import write_checkpoint

peft = pytest.importorskip("peft")

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def adapters(tiny_checkpoint, tmp_path_factory):
    """{(r, fan_in_fan_out): (adapter folder, PeftModel)} over the tiny checkpoint."""
    return {
        (r, fifo): make_adapter(tiny_checkpoint, tmp_path_factory.mktemp(f"lora-{r}-{fifo}"), r=r, fan_in_fan_out=fifo)
        for r in (4, 16)
        for fifo in (True, False)
    }


IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 64, 250, 600]])


@pytest.mark.parametrize("r", [4, 16])
@pytest.mark.parametrize("fan_in_fan_out", [True, False])
def test_merged_adapter_gives_peft_models_logits(adapters, tiny, r, fan_in_fan_out):
    folder, theirs = adapters[r, fan_in_fan_out]
    saved = json.loads((folder / "adapter_config.json").read_text())
    ours = GPT2.from_pretrained(folder)  # the base named by adapter_config.json
    with torch.no_grad():
        our_logits, their_logits, base_logits = ours(IDS), theirs(IDS).logits, tiny[0](IDS)
    diff = (our_logits - their_logits).abs().max().item()
    moved = (their_logits - base_logits).abs().max().item()
    print(f"\nLoRA r={r}, fan_in_fan_out={fan_in_fan_out} (saved as {saved['fan_in_fan_out']}): "
          f"max abs logit difference from PeftModel {diff:.3e} (the adapter moves them by {moved:.2f})")  # fmt: skip
    assert diff <= TOLERANCE and moved > 100 * TOLERANCE
    mine = ours.generate(IDS, max_new_tokens=20, eos_token_id=None)
    assert mine.tolist() == reference_greedy(theirs, IDS, 20).tolist()


def test_kept_separate_gives_the_merged_logits_and_a_hook_sees_each_branch(adapters, tiny, tiny_checkpoint):
    folder, _ = adapters[4, True]
    merged = GPT2.from_pretrained(folder)
    kept = GPT2.from_pretrained(folder, merge_lora=False)
    c_attn = kept.h[0].attn.c_attn
    assert isinstance(c_attn, LoRALinear) and torch.equal(c_attn.weight, tiny[0].h[0].attn.c_attn.weight)  # the base's
    points = [name for name in kept.hook_names() if "hook_lora_" in name]
    each_block = ["attn.hook_lora_c_attn", "attn.hook_lora_c_proj", "mlp.hook_lora_c_fc", "mlp.hook_lora_c_proj"]
    assert points == [f"blocks.{i}.{p}" for i in range(2) for p in each_block]
    assert not any("hook_lora_" in name for name in merged.hook_names())
    with torch.no_grad():
        kept_logits, merged_logits, base_logits = kept(IDS), merged(IDS), tiny[0](IDS)
        _, branches = kept.run_with_cache(IDS, names=points)
        silenced = kept(IDS, hooks={name: lambda added: torch.zeros_like(added) for name in points})
        written_out, _ = kept.run_with_cache(IDS)  # every point: the heads' results, c_proj's branch added whole
    diff = (kept_logits - merged_logits).abs().max().item()
    print(f"\nLoRA kept separate: max abs logit difference from merged {diff:.3e}")
    assert diff <= TOLERANCE
    T = IDS.shape[1]
    assert branches["blocks.0.attn.hook_lora_c_attn"].shape == (1, T, 192)
    assert branches["blocks.1.mlp.hook_lora_c_fc"].shape == (1, T, 256)
    assert torch.equal(silenced, base_logits)  # each branch's output is all that the adapter adds
    assert (written_out - kept_logits).abs().max() <= TOLERANCE
    with pytest.raises(ValueError, match=r"merge_lora=False keeps a LoRA adapter's branches, and .* is no adapter"):
        GPT2.from_pretrained(tiny_checkpoint, merge_lora=False)
    with pytest.raises(ValueError, match="give process= or merge_lora=False, not both"):
        GPT2.from_pretrained(folder, merge_lora=False, process=True)


def test_a_base_given_wins_over_the_one_named_and_a_missing_base_says_so(adapters, tiny_checkpoint, tmp_path):
    folder = shutil.copytree(adapters[4, True][0], tmp_path / "adapter")
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "moved-away")
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="the base checkpoint '.*moved-away' of .*adapter is not there"):
        GPT2.from_pretrained(folder)
    named = GPT2.from_pretrained(adapters[4, True][0])
    given = GPT2.from_pretrained(folder, base=tiny_checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(named.state_dict().values(), given.state_dict().values(), strict=True))
    config["base_model_name_or_path"] = None
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"names no base model .*base=BASE \(--base BASE\)"):
        GPT2.from_pretrained(folder)


def test_an_adapter_for_another_base_names_the_tensor_and_both_shapes(adapters, tmp_path):
    narrow = write_checkpoint(tmp_path / "narrow", n_embd=32, n_head=4)
    message = r"h.0.attn.c_attn's lora_B \(192, 4\) @ lora_A \(4, 64\) does not fit the base's h.0.attn.c_attn.weight \(96, 32\)"
    with pytest.raises(CheckpointError, match=message):
        GPT2.from_pretrained(adapters[4, True][0], base=narrow)


def test_an_adapter_bin_that_would_run_code_is_refused(adapters, tmp_path, capsys):
    folder = tmp_path / "evil"
    folder.mkdir()
    shutil.copy(adapters[4, True][0] / "adapter_config.json", folder)
    torch.save({"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": RunsCode()}, folder / "adapter_model.bin")
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file: its pickle calls print"):
        GPT2.from_pretrained(folder)
    assert "this pickle ran code" not in capsys.readouterr().out


def test_what_the_merge_does_not_compute_is_refused(adapters, tmp_path):
    folder = shutil.copytree(adapters[4, True][0], tmp_path / "dora")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(CheckpointError, match="sets use_dora, which minigpt2's merge does not compute"):
        GPT2.from_pretrained(folder)
    with pytest.raises(ValueError, match="give quantize= or merge_lora=False, not both"):
        GPT2.from_pretrained(adapters[4, True][0], quantize="int8", merge_lora=False)


def test_int8_quantizes_the_merged_weights(adapters):
    """quantize="int8" on an adapter: the adapter merges into the base's weights as stored, then int8
    quantizes the merged weights, as it quantizes any checkpoint's."""
    folder, peft_model = adapters[4, True]
    merged = GPT2.from_pretrained(folder)
    int8 = GPT2.from_pretrained(folder, quantize="int8")
    with torch.no_grad():
        exact, approx = merged(IDS), int8(IDS)
        from_peft = peft_model(IDS).logits
    relative = ((approx - exact).abs().max() / (exact.max() - exact.min())).item()
    print(f"\nint8 over a merged adapter: {relative:.2e} of the logit range from the merged fp32 model")
    assert (exact - from_peft).abs().max() <= TOLERANCE and relative <= 2e-2


def test_the_loop_script_and_the_parity_report_take_an_adapter(adapters, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(parity, "GREEDY_TOKENS", 3)  # PeftModel generates slowly; the logits are the point
    folder, _ = adapters[16, False]
    result = run_cli("Once upon a time", "--model", str(folder), "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)  # the base's
    ids = torch.tensor([tokenizer.encode("Once upon a time")])
    expected = GPT2.from_pretrained(folder).generate(ids, max_new_tokens=8)
    assert tokenizer.decode(expected[0]) in result.stdout
    report = parity.compare(str(folder))  # against PeftModel over transformers' base
    print(f"\nparity LoRA: logits max {max(p['logits_max_difference'] for p in report['prompts'].values()):.2e}")
    assert report["passed"], report["failures"]
