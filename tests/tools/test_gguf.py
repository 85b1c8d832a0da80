"""minigpt2 export --gguf: the file holds the checkpoint's numbers under llama.cpp's names, and llama.cpp
itself (llama-cpp-python, when installed: .ci/run installs it) reads it back to the same logits and tokens.
(The `minigpt2 export` command line: test_cli.py.)"""

from __future__ import annotations

import pytest
import torch

from minigpt2 import GPT2, Tokenizer
from minigpt2.checkpoint import resolve
from minigpt2.gguf import export_checkpoint, vocabulary

gguf = pytest.importorskip("gguf", reason="needs the gguf package (the test and bench extras)")

PROMPT = "Once upon a time there was"


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    files = {kind: folder / f"tiny-{kind}.gguf" for kind in ("f32", "q8_0")}
    for kind, path in files.items():
        export_checkpoint(str(tiny_checkpoint), path, kind)
    return files


def _tensors(path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def test_the_file_holds_the_checkpoint_under_llama_cpp_names(tiny, exported):
    model, _ = tiny
    tensors = _tensors(exported["f32"])
    L = model.config.n_layer
    assert len(tensors) == 2 + 12 * L + 2  # embeddings, 6 weights + 6 biases per block, final norm; head tied
    pairs = {"token_embd.weight": model.wte.weight, "blk.1.attn_qkv.weight": model.h[1].attn.c_attn.weight}
    pairs |= {"blk.0.ffn_down.weight": model.h[0].mlp.c_proj.weight, "output_norm.bias": model.ln_f.bias}
    for name, expected in pairs.items():
        stored = torch.from_numpy(tensors[name].data.copy()).reshape(expected.shape)
        assert torch.equal(stored, expected.detach()), name  # f32: the same numbers, [out, in] as llama.cpp reads

    q8 = _tensors(exported["q8_0"])["blk.1.attn_qkv.weight"]
    assert q8.tensor_type == gguf.GGMLQuantizationType.Q8_0
    weight = model.h[1].attn.c_attn.weight.detach()
    back = torch.from_numpy(gguf.quants.dequantize(q8.data, q8.tensor_type)).reshape(weight.shape)
    step = weight.abs().reshape(-1, 32).amax(dim=1) / 127  # one scale per block of 32
    error = (back - weight).abs().reshape(-1, 32).amax(dim=1)
    print(f"\nq8_0 round trip: worst error {(error / step).max():.2f} of a block's step")
    # half a step, plus the fp16 rounding of the scale (relative 2**-11) times the largest value, 127 steps
    assert (error <= step * (0.5 + 127 * 2**-11) * 1.001).all()


def test_the_vocabulary_is_the_tokenizers(tiny_checkpoint, tiny, kogpt2_checkpoint):
    tokens, merges, special = vocabulary(resolve(tiny_checkpoint))
    _, tokenizer = tiny
    assert len(tokens) == tokenizer.vocab_size and special == [tokenizer.eos_token_id]
    assert tokens[tokenizer.eos_token_id] == "<|endoftext|>" and all(len(m.split(" ")) == 2 for m in merges)
    with pytest.raises(ValueError, match="only GPT-2's byte-level BPE"):
        vocabulary(resolve(kogpt2_checkpoint))


def test_llama_cpp_reads_it_back(tiny, exported):
    pytest.importorskip("llama_cpp", reason='llama.cpp is the bench extra: pip install -e ".[bench]"')
    from bench.peers import Peer  # the benchmark's peer: scripts/, on the path through conftest

    model, tokenizer = tiny
    ids = tokenizer.encode(PROMPT)
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0]
    spread = (ours.max() - ours.min()).item()
    bounds = {"f32": 0.002, "q8_0": 0.05}  # of the logit range; llama.cpp keeps its KV cache in fp16
    for kind, path in exported.items():
        peer = Peer(path, threads=2, n_ctx=128, logits_all=True)
        assert peer.llm.tokenize(PROMPT.encode(), add_bos=False) == ids  # the same tokenizer
        theirs = peer.logits(ids)
        difference = (theirs - ours).abs().max().item() / spread
        agree = (theirs.argmax(-1) == ours.argmax(-1)).float().mean().item()
        print(f"\nllama.cpp {kind} vs minigpt2 fp32: {difference:.3%} of the logit range, top-1 agreement {agree:.0%}")
        assert difference < bounds[kind] and agree >= 0.8
        if kind == "f32":
            greedy = model.generate(torch.tensor([ids]), max_new_tokens=10)[0, len(ids) :].tolist()
            assert peer.greedy(ids, 10) == greedy


def test_a_fine_tune_with_a_padded_vocabulary(finetuned_checkpoint, tmp_path):
    """A transformers 5 save with added tokens and rows past the tokenizer (resized to a multiple of 64)."""
    size = export_checkpoint(str(finetuned_checkpoint), tmp_path / "ft.gguf", "f32")
    reader = gguf.GGUFReader(str(tmp_path / "ft.gguf"))
    model = GPT2.from_pretrained(str(finetuned_checkpoint))
    tokenizer = Tokenizer.from_pretrained(str(finetuned_checkpoint))
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode() for i in field.data]
    assert len(tokens) == model.config.vocab_size > tokenizer.vocab_size and size > 0
    pad = tokenizer.pad_token_id
    assert tokens[pad] == "<|pad|>" and tokens[-1].startswith("[PAD")
    types = reader.fields["tokenizer.ggml.token_type"]
    assert int(types.parts[types.data[pad]][0]) == 3 and int(types.parts[types.data[-1]][0]) == 5
