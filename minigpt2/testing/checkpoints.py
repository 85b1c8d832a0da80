"""Random GPT-2 checkpoints in the official hub layout (and others), for work without a network: what the
tests, the benchmark and scripts/make_checkpoint.py build.

The weights come from transformers' own GPT2LMHeadModel initialisation (transformers, the reference,
imported here inside the functions: the parity extra). Layouts:
  official         what openai-community/gpt2* hold: config.json with the official fields,
                   model.safetensors with unprefixed keys, the h.N.attn.bias mask buffers,
                   and no lm_head.weight (it is tied to wte);
  save_pretrained  what transformers' save_pretrained writes ("transformer." prefixed keys);
  finetuned        a fine-tune as transformers 5 saves it: tokenizer.json + tokenizer_config.json
                   only, a pad token, chat tokens and a plain added token, the vocabulary resized
                   to a multiple of 64, the weights in shards (implies --tokenizer);
  kogpt2           the Korean GPT-2's layout (skt/kogpt2-base-v2): a SentencePiece-style BPE in
                   tokenizer.json alone (NFKC, "▁" metaspace, <s> </s> <usr> <pad> <unk> ...),
                   eos and pad named only in config.json, weights in pytorch_model.bin.
With --tokenizer it also trains a small byte-level BPE vocabulary (vocab.json + merges.txt, with
<|endoftext|> last, as GPT-2 has it) and sizes the model's vocabulary to match.

    python scripts/make_checkpoint.py /tmp/gpt2-medium-random --shape gpt2-medium
    python scripts/make_checkpoint.py /tmp/tiny --shape tiny --tokenizer
    python scripts/make_checkpoint.py /tmp/ko --shape tiny --layout kogpt2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

SHAPES = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, n_positions=128),
    "distilgpt2": dict(n_layer=6, n_embd=768, n_head=12, n_positions=1024),
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16, n_positions=1024),
}
EOS = "<|endoftext|>"

# Text of many kinds, for training a vocabulary and for checking tokenizers against each other.
SAMPLE_TEXTS = [
    "Once upon a time, there was a little girl who lived in a village near the forest.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! it's, we'll, they've, I'd, you're",
    "옛날 옛적에 작은 마을에 한 소녀가 살았습니다. 한국어 텍스트도 잘 처리되어야 합니다.",
    "昔々、ある村に小さな女の子が住んでいました。中文也应该被正确处理。",
    "Emoji: 😀🎉👩‍💻🏳️‍🌈 and flags 🇰🇷🇯🇵, café naïve résumé Ångström ß ﬁ",
    "def greet(name: str) -> str:\n    return f'Hello, {name}!'\n\n\tif x == 1:\n\t\tprint(x)  # tab\n",
    "Numbers 12345 3.14159 1,000,000 and dates 2026-11-25; prices $19.99 €5",
    "   leading spaces, trailing spaces   \n\n\n  multiple\tblank\r\nlines\u00a0nbsp  ",
    "Symbols: <|endoftext|> {}[]()!@#$%^&*_+=-~`|\\:;\"'<>,.?/ — “quotes” ‘single’ …",
]


def official_config(**shape) -> dict:
    """config.json as the official checkpoints have it, for any shape."""
    config = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 50256,
        "embd_pdrop": 0.1,
        "eos_token_id": 50256,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": 1024,
        "n_embd": 1024,
        "n_head": 16,
        "n_layer": 24,
        "n_positions": 1024,
        "n_special": 0,
        "predict_special_tokens": True,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 50257,
    }
    config.update(shape)
    config["n_ctx"] = config["n_positions"]
    config["bos_token_id"] = config["eos_token_id"] = config["vocab_size"] - 1
    return config


def train_tokenizer(out_dir: Path, vocab_size: int) -> int:
    """Train a byte-level BPE on SAMPLE_TEXTS and some Python sources; returns the vocabulary size."""
    import textwrap
    import tokenize

    from tokenizers import ByteLevelBPETokenizer

    corpus = SAMPLE_TEXTS + [
        Path(m.__file__).read_text(encoding="utf-8") for m in (argparse, json.decoder, textwrap, tokenize)
    ]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size - 1, min_frequency=1, show_progress=False)
    bpe.save_model(str(out_dir))
    vocab_path = out_dir / "vocab.json"
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    vocab[EOS] = len(vocab)  # GPT-2 keeps its one special token last
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return len(vocab)


# The Korean GPT-2's special tokens, in its order (its vocabulary has 100 <unused> tokens; a few do here).
KOGPT2_SPECIALS = ["<s>", "</s>", "<usr>", "<pad>", "<sys>", "<unk>", "<mask>", "<d>", "</d>"] + [
    f"<unused{i}>" for i in range(4)
]
# What a fine-tune adds to GPT-2's tokenizer: a pad token, chat tokens (one that takes the whitespace
# around it), and a plain token matched after the special ones.
FINETUNE_SPECIALS = {"pad_token": "<|pad|>", "additional_special_tokens": ["<|user|>", "<|assistant|>"]}


def write_checkpoint(
    out_dir, *, shape: str = "tiny", layout: str = "official", tokenizer: bool = False, seed: int = 0, **overrides
) -> Path:
    """Write a random checkpoint into out_dir (created if needed) and return its path.

    overrides: config.json fields (n_positions, tie_word_embeddings, activation_function, ...).
    """
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if layout == "finetuned":
        return _write_finetuned(out_dir, shape=shape, seed=seed, **overrides)
    if layout == "kogpt2":
        return _write_kogpt2(out_dir, shape=shape, seed=seed, **overrides)
    shape_args = {**SHAPES[shape], **overrides}
    if tokenizer:
        shape_args["vocab_size"] = train_tokenizer(out_dir, shape_args.get("vocab_size", 1000))
    config = official_config(**shape_args)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**config)).eval()
    if layout == "save_pretrained":
        model.save_pretrained(out_dir)
        return out_dir
    n = config["n_positions"]
    causal_mask = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
    tied = config.get("tie_word_embeddings", True)  # a tied head is wte: the official files do not store it
    state = {
        k.removeprefix("transformer."): v.contiguous()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    state.update({f"h.{i}.attn.bias": causal_mask.clone() for i in range(config["n_layer"])})
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _write_finetuned(out_dir: Path, *, shape: str, seed: int, dtype=None, **overrides) -> Path:
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, GPT2LMHeadModel

    base = write_checkpoint(out_dir / "base", shape=shape, tokenizer=True, seed=seed, **overrides)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.add_special_tokens(FINETUNE_SPECIALS)
    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken("<|sys|>", lstrip=True, rstrip=True)]})
    tokenizer.add_tokens(["fine_tuned_word"])
    model = GPT2LMHeadModel.from_pretrained(base, dtype=dtype)
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
    model.save_pretrained(out_dir, max_shard_size="100KB")
    tokenizer.save_pretrained(out_dir)
    _remove_tree(base)
    return out_dir


def _write_kogpt2(out_dir: Path, *, shape: str, seed: int, **overrides) -> Path:
    from tokenizers import SentencePieceBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    bpe = SentencePieceBPETokenizer(unk_token="<unk>")
    bpe.train_from_iterator(SAMPLE_TEXTS * 3, vocab_size=600, special_tokens=KOGPT2_SPECIALS, show_progress=False)
    bpe.save(str(out_dir / "tokenizer.json"))
    config = official_config(**{**SHAPES[shape], "vocab_size": bpe.get_vocab_size(), **overrides})
    config.update(bos_token_id=0, eos_token_id=1, pad_token_id=3)  # <s>, </s>, <pad>, as the Korean GPT-2 has them
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**config)).eval()
    torch.save(dict(model.state_dict()), out_dir / "pytorch_model.bin")  # "transformer." keys and lm_head.weight
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the checkpoint into")
    parser.add_argument("--shape", choices=SHAPES, default="tiny", help="model size (default: tiny)")
    parser.add_argument("--layout", choices=["official", "save_pretrained", "finetuned", "kogpt2"], default="official")
    parser.add_argument("--tokenizer", action="store_true", help="also train and write vocab.json + merges.txt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_checkpoint(
        args.out_dir, shape=args.shape, layout=args.layout, tokenizer=args.tokenizer, seed=args.seed
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
