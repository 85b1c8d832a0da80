"""minigpt2/loading/formats.py: the fine-tunes people have outside save_pretrained's layout, each against
transformers. A torch.save state dict (.pth, with and without "transformer.") over a base's config; nanoGPT's
ckpt.pt (built here from a transformers model in nanoGPT's layout: "_orig_mod.", nn.Linear [out, in], the
vocabulary padded to 50304, bias=False); llm.c's model file (its header, fp32 and bf16). Pickles that need
code and whole pickled models are refused; the loop script and the parity report take every format; bad
input (shapes, a missing base) is one line.

nanoGPT's own model.py is not a package the tests can install (its repository is not on PyPI), so the
layout is built here from its documented format; transformers with nanoGPT's exact GELU is the reference."""

from __future__ import annotations

import json

import pytest
import torch
from checkpoint_kinds import GPT2_VOCAB, LINEARS, NANOGPT_VOCAB, SHAPE, nanogpt_checkpoint, random_gpt2
from conftest import LOAD_AND_GENERATE, fill_hub_cache, run_cli, run_python
from test_loading import RunsCode
from transformers import GPT2LMHeadModel

from minigpt2 import GPT2, CheckpointError, Tokenizer, cli, loading, parity, resolve
from minigpt2.parity.reference import reference_greedy

TOLERANCE = 1e-5
NEW_TOKENS = 20
LLMC_PADDED = 50304


def compare(ours: GPT2, theirs: GPT2LMHeadModel, what: str, ids=None, tolerance=TOLERANCE) -> torch.Tensor:
    """Logits (the first len(theirs' vocabulary)) within tolerance, and the same greedy tokens; ours' logits."""
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 64, 1000, 50000]]) if ids is None else ids
    with torch.no_grad():
        our_logits, their_logits = ours(ids), theirs(ids).logits
        V = their_logits.size(-1)
        diff = (our_logits[..., :V].float() - their_logits).abs().max().item()
        print(f"\n{what}: max abs logit difference {diff:.3e}")
        assert diff <= tolerance
        if our_logits.size(-1) == V:
            mine = ours.generate(ids, max_new_tokens=NEW_TOKENS, eos_token_id=None)
            assert mine.tolist() == reference_greedy(theirs, ids, NEW_TOKENS).tolist()
    return our_logits


# ---- a torch.save state dict over a base ----


@pytest.mark.parametrize("prefix", ["transformer.", ""])
def test_a_state_dict_pth_over_a_base_gives_transformers_logits(tiny_checkpoint, reference, tmp_path, prefix):
    state = {k.removeprefix("transformer.") if not prefix else k: v for k, v in reference.state_dict().items()}
    path = tmp_path / "elsewhere" / "finetune.pth"
    path.parent.mkdir()
    torch.save(state, path)
    ours = GPT2.from_pretrained(path, base=tiny_checkpoint)
    compare(
        ours, reference, f".pth, keys {'with' if prefix else 'without'} 'transformer.'", torch.tensor([[5, 17, 42]])
    )


def test_a_whole_pickled_model_is_refused_with_the_fix(tiny_checkpoint, tmp_path):
    torch.save(random_gpt2("gelu_new"), tmp_path / "model.pt")  # the whole module: only its class rebuilds it
    with pytest.raises(CheckpointError, match=r"whole pickled model .*torch.save\(model.state_dict\(\), 'model.pt'\)"):
        GPT2.from_pretrained(tmp_path / "model.pt", base=tiny_checkpoint)


def test_a_state_dict_without_a_base_or_with_a_missing_one_says_so(reference, tmp_path):
    torch.save(reference.state_dict(), tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"config.json not found.*base=BASE \(--base BASE\)"):
        GPT2.from_pretrained(tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="the base checkpoint '.*no-base' of .*x.pth is not there"):
        GPT2.from_pretrained(tmp_path / "x.pth", base=tmp_path / "no-base")


def test_a_mismatched_shape_names_the_tensor_and_both_shapes(tiny_checkpoint, reference, tmp_path):
    state = dict(reference.state_dict())
    state["transformer.h.1.mlp.c_fc.weight"] = state["transformer.h.1.mlp.c_fc.weight"][:, :100]
    torch.save(state, tmp_path / "x.pth")
    message = r"wrong shape: h.1.mlp.c_fc.weight \(100, 64\) \(config says \(256, 64\)\)"
    with pytest.raises(CheckpointError, match=message):
        GPT2.from_pretrained(tmp_path / "x.pth", base=tiny_checkpoint)


# ---- nanoGPT ----


@pytest.fixture(scope="module")
def nanogpt(tmp_path_factory):
    """{bias: (ckpt.pt, its transformers twin, the pad rows of wte)}."""
    made = {}
    for bias in (True, False):
        twin = random_gpt2("gelu", zero_biases=not bias)  # nanoGPT's nn.GELU is the exact one
        path, pad_rows = nanogpt_checkpoint(twin, tmp_path_factory.mktemp(f"nanogpt-{bias}") / "ckpt.pt", bias=bias)
        made[bias] = path, twin, pad_rows
    return made


@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_ckpt_gives_transformers_logits_and_keeps_the_padded_vocabulary(nanogpt, bias):
    path, twin, pad_rows = nanogpt[bias]
    ours = GPT2.from_pretrained(path)
    assert ours.config.vocab_size == NANOGPT_VOCAB and ours.config.n_positions == SHAPE["n_positions"]
    logits = compare(ours, twin, f"nanoGPT ckpt.pt, bias={bias}")
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 64, 1000, 50000]])
    with torch.no_grad():  # the pad rows' logits: the final stream against the rows nanoGPT trained
        final = twin(ids, output_hidden_states=True).hidden_states[-1]
    pad = (logits[..., GPT2_VOCAB:] - final @ pad_rows.t()).abs().max().item()
    print(f"nanoGPT pad rows 50257..50303: max abs logit difference {pad:.3e}")
    assert logits.shape[-1] == NANOGPT_VOCAB and pad <= TOLERANCE
    if not bias:  # the left-out biases are zeros, so the model is GPT-2's as it is
        assert not ours.h[0].attn.c_attn.bias.any() and not ours.ln_f.bias.any()


def test_nanogpt_model_args_that_disagree_with_the_weights_name_both_shapes(nanogpt, tmp_path):
    checkpoint = torch.load(nanogpt[True][0], weights_only=True)
    checkpoint["model_args"]["n_embd"] = 64
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    message = r"does not match the shape nanoGPT's model_args give \(.*wrong shape: wte.weight \(50304, 32\) \(config says \(50304, 64\)\)"
    with pytest.raises(CheckpointError, match=message):
        GPT2.from_pretrained(tmp_path / "ckpt.pt")


def test_nanogpt_alone_reads_gpt2s_tokenizer_from_the_hub_cache(nanogpt, tiny_checkpoint, tmp_path, monkeypatch):
    path = nanogpt[True][0]
    hub = tmp_path / "hf" / "hub"
    names = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
    fill_hub_cache(hub, "openai-community/gpt2", {n: tiny_checkpoint / n for n in names}, commit="a" * 40)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = run_python("-c", LOAD_AND_GENERATE, str(path), "Once upon a time", env=env)
    assert result.returncode == 0, result.stderr
    ids = torch.tensor([Tokenizer.from_pretrained(tiny_checkpoint).encode("Once upon a time")])
    assert json.loads(result.stdout) == GPT2.from_pretrained(path).generate(ids, max_new_tokens=12).tolist()

    def not_cached(name, *args, **kwargs):  # offline with an empty cache, without a second interpreter
        raise CheckpointError(f"{name} is not in the local hub cache and the hub cannot be reached")

    checkpoint, model = resolve(path), GPT2.from_pretrained(path)
    monkeypatch.setattr(loading, "resolve", not_cached)
    with pytest.raises(CheckpointError, match="has no tokenizer beside it, so GPT-2's is read, and gpt2 is not in"):
        loading.tokenizer_checkpoint(checkpoint, model)


# ---- llm.c ----


def llmc_file(model: GPT2LMHeadModel, path, dtype: torch.dtype):
    """model's weights as llm.c's train_gpt2.py write_model writes them: the header, then each kind of
    parameter for every layer in turn, nn.Linear's [out, in], wte padded to 50304 with zero rows."""
    c, L = model.config, model.config.n_layer
    p = {name.removeprefix("transformer."): t for name, t in model.state_dict().items()}
    header = torch.zeros(256, dtype=torch.int32)
    header[:8] = torch.tensor([20240326, {torch.float32: 3, torch.bfloat16: 5}[dtype], c.n_positions, GPT2_VOCAB,
                               L, c.n_head, c.n_embd, LLMC_PADDED])  # fmt: skip
    wte = torch.cat([p["wte.weight"], torch.zeros(LLMC_PADDED - GPT2_VOCAB, c.n_embd)])
    order = [wte, p["wpe.weight"]]
    for kind in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                 "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                 "mlp.c_proj.weight", "mlp.c_proj.bias"):  # fmt: skip
        order += [p[f"h.{i}.{kind}"].t() if kind in LINEARS else p[f"h.{i}.{kind}"] for i in range(L)]
    order += [p["ln_f.weight"], p["ln_f.bias"]]
    body = torch.cat([t.contiguous().flatten() for t in order]).to(dtype)
    path.write_bytes(header.numpy().tobytes() + body.view(torch.int16).numpy().tobytes()
                     if dtype == torch.bfloat16 else header.numpy().tobytes() + body.numpy().tobytes())  # fmt: skip
    return path


@pytest.fixture(scope="module")
def llmc(tmp_path_factory):
    """(fp32 file, bf16 file, their transformers twin)."""
    twin = random_gpt2("gelu_new", seed=2)  # llm.c's GELU is the tanh approximation, GPT-2's
    folder = tmp_path_factory.mktemp("llmc")
    fp32 = llmc_file(twin, folder / "gpt2_124M.bin", torch.float32)
    return fp32, llmc_file(twin, folder / "gpt2_124M_bf16.bin", torch.bfloat16), twin


def test_llmc_fp32_gives_transformers_logits(llmc):
    fp32, _, twin = llmc
    ours = GPT2.from_pretrained(fp32)
    assert ours.config.vocab_size == GPT2_VOCAB  # llm.c's zero pad rows dropped: it computes over V only
    compare(ours, twin, "llm.c fp32 .bin")


def test_llmc_bf16_keeps_its_dtype_and_its_values_are_exact(llmc):
    bf16 = llmc[1]
    ours = GPT2.from_pretrained(bf16)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    rounded = random_gpt2("gelu_new", seed=2)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.bfloat16().float())
    compare(GPT2.from_pretrained(bf16, dtype="float32"), rounded, "llm.c bf16 .bin read as fp32, vs bf16-rounded")
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 64]])
    with torch.no_grad():
        theirs = rounded(ids).logits
        relative = (ours(ids).float() - theirs).abs().max().item() / theirs.abs().max().item()
    print(f"llm.c bf16 .bin computed in bf16: {relative:.2%} of the largest logit (tolerance 3%)")
    assert relative < 0.03


def test_llmc_file_cut_short_says_so(llmc, tmp_path):
    (tmp_path / "cut.bin").write_bytes(llmc[0].read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="cut short or not llm.c's"):
        GPT2.from_pretrained(tmp_path / "cut.bin")


# ---- every format: pickles that need code, the loop script, the parity report ----

NANOGPT_ARGS = dict(n_layer=2, n_head=4, n_embd=32, block_size=128, bias=True, vocab_size=50304, dropout=0.0)


@pytest.mark.parametrize(
    "name, contents",
    [
        ("finetune.pth", {"wte.weight": RunsCode()}),
        ("ckpt.pt", {"model": {"transformer.wte.weight": RunsCode()}, "model_args": NANOGPT_ARGS}),
        ("gpt2_124M.bin", {"wte.weight": RunsCode()}),  # a pickle under llm.c's name
    ],
)
def test_a_pickle_that_would_run_code_is_refused(tiny_checkpoint, tmp_path, capsys, name, contents):
    torch.save(contents, tmp_path / name)
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file: its pickle calls print"):
        GPT2.from_pretrained(tmp_path / name, base=tiny_checkpoint)
    assert "this pickle ran code" not in capsys.readouterr().out


@pytest.fixture(scope="module")
def every_format(tiny_checkpoint, reference, nanogpt, llmc, tmp_path_factory):
    """{format: (path, the base given with --base)}: the tokenizer is the tiny checkpoint's."""
    pth = tmp_path_factory.mktemp("pth") / "finetune.pth"
    torch.save(reference.state_dict(), pth)
    return {
        "pth": (pth, tiny_checkpoint),
        "nanoGPT": (nanogpt[False][0], tiny_checkpoint),
        "llm.c": (llmc[0], tiny_checkpoint),
    }


@pytest.mark.parametrize("kind", ["pth", "nanoGPT", "llm.c"])
def test_the_loop_script_and_the_parity_report_take_each_format(every_format, kind, monkeypatch):
    monkeypatch.setattr(parity, "GREEDY_TOKENS", 3)  # transformers generate()s slowly; compare() checks 20
    path, base = every_format[kind]
    result = run_cli("Once upon a time", "--model", str(path), "--base", str(base), "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    model, tokenizer = GPT2.from_pretrained(path, base=base), Tokenizer.from_pretrained(base)
    ids = tokenizer.encode("Once upon a time")
    expected = model.generate(torch.tensor([ids]), max_new_tokens=8)[0].tolist()
    assert tokenizer.decode(expected) in result.stdout
    report = parity.compare(str(path), base=str(base))
    print(f"\nparity {kind}: logits max {max(p['logits_max_difference'] for p in report['prompts'].values()):.2e}")
    assert report["passed"], report["failures"]


def test_the_loop_script_says_in_one_line_that_a_base_is_missing(every_format, tmp_path):
    path, _ = every_format["pth"]
    result = run_cli("Hi", "--model", str(path), "--base", str(tmp_path / "gone"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "is not there" in result.stderr, result.stderr
    assert cli.main(["parity", str(path), "--base", str(tmp_path / "gone")]) == 2


def test_config_naming_a_base_still_works_with_a_deprecation_warning(every_format, tiny_checkpoint):
    """base= is the base checkpoint's name now; config=, its old name, loads the same model and warns, and
    config= given a GPT2Config (transformers' meaning) is refused in one line that says what to do."""
    path, base = every_format["pth"]
    with pytest.warns(DeprecationWarning, match="now base="):
        old = GPT2.from_pretrained(path, config=base)
    new = GPT2.from_pretrained(path, base=base)
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="use GPT2\\(config\\)"):
        GPT2.from_pretrained(path, config=new.config)
