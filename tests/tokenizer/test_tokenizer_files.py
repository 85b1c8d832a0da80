"""minigpt2/tokenizer/files.py and hf_tokenizers.py: tokenizers in every layout transformers reads (tokenizer.json
only, added tokens, older files), KoGPT2's kind on the tokenizers library, and kinds that cannot run."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import KOGPT2_CARD
from test_tokenizer import UNSEEN_TEXTS
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from minigpt2 import CheckpointError, Tokenizer
from minigpt2.testing.checkpoints import SAMPLE_TEXTS

# Text with the fine-tune's added tokens in every position, and the whitespace its flags act on.
ADDED_TOKEN_TEXTS = [
    "<|user|>Hello there<|assistant|>Hi!<|endoftext|>",
    "<|pad|><|pad|>x <|user|> y<|user|>z",
    "a  <|sys|>  b\n<|sys|>\tc<|sys|>",
    "fine_tuned_word, a fine_tuned_word! xfine_tuned_wordx <|user|>fine_tuned_word",
    "<|user|<|user|>>  <|endoftext|<|endoftext|>",
    "옛날 <|assistant|>😀 fine_tuned_word<|endoftext|>",
]
TEXTS = SAMPLE_TEXTS + UNSEEN_TEXTS + ADDED_TOKEN_TEXTS
KOREAN_TEXTS = [
    "옛날 옛적에 작은 마을에 한 소녀가 살았습니다.",
    "근육이 커지기 위해서는",
    "한국어 문장과 English가 섞인 text입니다 😀 ㅋㅋㅋ",
    "</s>안녕<pad><unk> <usr>질문 <sys>",
    "  spaces   and\ttabs\n",
    "",
]


# How the Korean GPT-2's model card loads its tokenizer (its repo's files name none of these).
def assert_same_as(ours: Tokenizer, reference, texts):
    for text in texts:
        ids = reference.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == reference.decode(ids), text
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True), text
        assert "".join(ours.decode_stream(ids)) == ours.decode(ids), text
    for role in ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(ours, role) == getattr(reference, role), role


def test_transformers_5_save_tokenizer_json_only_with_added_tokens(finetuned_checkpoint):
    assert not (finetuned_checkpoint / "vocab.json").exists()
    ours = Tokenizer.from_pretrained(finetuned_checkpoint)
    reference = AutoTokenizer.from_pretrained(finetuned_checkpoint)
    assert ours.kind == "gpt2-byte-level"  # tokenizer.json holding GPT-2's BPE still runs on tiktoken
    assert ours.pad_token_id == reference.convert_tokens_to_ids("<|pad|>") != ours.eos_token_id
    assert_same_as(ours, reference, TEXTS)
    ids = ours.encode("<|user|>Hi<|assistant|>Hello<|endoftext|>")
    assert ours.decode(ids, skip_special_tokens=True) == "HiHello"


@pytest.mark.parametrize("with_decoder", [False, True], ids=["special_tokens_map", "added_tokens_decoder"])
def test_older_layout_vocab_merges_and_added_token_files(tiny_checkpoint, tmp_path, with_decoder):
    """transformers 4's files: vocab.json + merges.txt, and the added tokens in their own files."""
    target = tmp_path / "older"
    target.mkdir()
    for name in ("vocab.json", "merges.txt", "config.json"):
        shutil.copy(tiny_checkpoint / name, target / name)
    n = len(json.loads((tiny_checkpoint / "vocab.json").read_text()))
    added = {"<|pad|>": n, "<|user|>": n + 1, "fine_tuned_word": n + 2}
    specials = {"pad_token": "<|pad|>", "additional_special_tokens": ["<|user|>"]}
    (target / "added_tokens.json").write_text(json.dumps(added))
    (target / "special_tokens_map.json").write_text(json.dumps(specials))
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 128}
    if with_decoder:
        config["pad_token"] = "<|pad|>"
        config["added_tokens_decoder"] = {
            str(i): {"content": t, "special": t != "fine_tuned_word", "normalized": t == "fine_tuned_word"}
            for t, i in added.items()
        }
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    ours = Tokenizer.from_pretrained(target)
    reference = AutoTokenizer.from_pretrained(target)
    assert ours.pad_token_id == n
    assert_same_as(ours, reference, TEXTS)


def test_kogpt2_kind_runs_on_the_tokenizers_library(kogpt2_checkpoint):
    ours = Tokenizer.from_pretrained(kogpt2_checkpoint)
    reference = PreTrainedTokenizerFast.from_pretrained(kogpt2_checkpoint, **KOGPT2_CARD)
    assert ours.kind == "tokenizers"
    # Named only by config.json: eos </s> (1) and pad <pad> (3), as the model card names them.
    assert (ours.eos_token_id, ours.pad_token_id) == (reference.eos_token_id, reference.pad_token_id) == (1, 3)
    assert ours.unk_token_id is None or ours.unk_token_id == reference.unk_token_id
    for text in KOREAN_TEXTS + SAMPLE_TEXTS:
        ids = reference.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == reference.decode(ids), text
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True), text
        assert "".join(ours.decode_stream(ids)) == ours.decode(ids), text
    korean = SAMPLE_TEXTS[2]  # in the replica's training text, so every character is in its vocabulary
    assert ours.unk_token_id not in ours.encode(korean) and ours.decode(ours.encode(korean)) == korean


def test_kinds_that_cannot_run_are_refused_by_name(tiny_checkpoint, tmp_path):
    spm = tmp_path / "spm"
    spm.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", spm / "config.json")
    (spm / "tokenizer.model").write_bytes(b"\x0a\x00")
    with pytest.raises(CheckpointError, match=r"has a SentencePiece model \(tokenizer.model\) and no tokenizer.json"):
        Tokenizer.from_pretrained(spm)
    (spm / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="has no tokenizer: neither tokenizer.json nor vocab.json"):
        Tokenizer.from_pretrained(spm)
    (spm / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "Quantum"}}))
    with pytest.raises(CheckpointError, match="a tokenizer.json that the tokenizers library cannot run"):
        Tokenizer.from_pretrained(spm)
