"""What a checkpoint's tokenizer files say, read with transformers' rules of precedence.

A GPT-2 tokenizer is stored in one of two ways: vocab.json + merges.txt (older saves, and the
official repos), or tokenizer.json alone (what transformers 5 writes). Around either, the
special tokens and the tokens added after training can come from:
  - tokenizer.json's "added_tokens" (each with its matching flags);
  - tokenizer_config.json: "eos_token", "bos_token", ... and "added_tokens_decoder";
  - special_tokens_map.json and added_tokens.json, older files that transformers still reads,
    but only when tokenizer_config.json has no "added_tokens_decoder";
  - the tokenizer class's defaults: "<|endoftext|>" for GPT-2's bos, eos and unk.
A role that none of them fills with a token of the vocabulary is taken from the model's own
config.json (eos_token_id, ...), as generation would: the Korean GPT-2 names its eos only there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import Checkpoint, CheckpointError, read_json

ROLES = ("bos_token", "eos_token", "unk_token", "pad_token")
GPT2_DEFAULTS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
GPT2_CLASSES = {None, "GPT2Tokenizer", "GPT2TokenizerFast"}  # None: no tokenizer_config.json, model_type gpt2


@dataclass(frozen=True)
class AddedToken:
    """A token matched whole in text before BPE runs, with tokenizers' matching flags."""

    content: str
    id: int
    special: bool = False  # skipped by decode(skip_special_tokens=True)
    lstrip: bool = False  # the match takes the whitespace on its left
    rstrip: bool = False  # ... and on its right
    single_word: bool = False  # only matches with no letter, digit or "_" next to it
    normalized: bool = True  # matched after the special (not normalized) ones


@dataclass
class TokenizerFiles:
    """Everything a Tokenizer is built from; exactly one of tokenizer_json and (vocab, merges) is set."""

    tokenizer_json: dict | None = None
    tokenizer_json_path: Path | None = None
    vocab: dict[str, int] | None = None
    merges: list[tuple[str, str]] | None = None
    added: list[AddedToken] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # "eos_token" -> its text
    model_ids: dict[str, int] = field(default_factory=dict)  # "eos_token" -> config.json's eos_token_id


def read_tokenizer_files(checkpoint: Checkpoint) -> TokenizerFiles:
    files = TokenizerFiles()
    # config.json as transformers' AutoTokenizer reads it (a local tokenizer folder may do without one).
    model_config = checkpoint.config or {}
    json_path = checkpoint.path("tokenizer.json")
    if json_path is not None:
        files.tokenizer_json, files.tokenizer_json_path = read_json(json_path), json_path
    else:
        vocab_path = checkpoint.path("vocab.json")
        merges_path = checkpoint.path("merges.txt") if vocab_path else None
        if vocab_path is None or merges_path is None:
            _refuse_other_kinds(checkpoint)
        files.vocab, files.merges = read_vocab_and_merges(vocab_path, merges_path)

    config = checkpoint.read_json("tokenizer_config.json") or {}
    # The class's defaults, then tokenizer_config.json, then (the older way) special_tokens_map.json.
    tokenizer_class = config.get("tokenizer_class")
    if tokenizer_class is None and model_config.get("model_type") not in (None, "gpt2"):
        tokenizer_class = "PreTrainedTokenizerFast"
    roles = dict(GPT2_DEFAULTS) if tokenizer_class in GPT2_CLASSES else {}
    roles.update({k: _content(v) for k, v in config.items() if k in ROLES and v is not None})
    added = {t.id: t for t in _json_added_tokens(files.tokenizer_json)}
    if "added_tokens_decoder" in config:
        for i, token in config["added_tokens_decoder"].items():
            added[int(i)] = _added_token(int(i), token)
    else:
        special_map = checkpoint.read_json("special_tokens_map.json") or {}
        roles.update({k: _content(v) for k, v in special_map.items() if k in ROLES and v is not None})
        # transformers 5 counts "extra_special_tokens" here, and no longer the older "additional_special_tokens".
        extra = special_map.get("extra_special_tokens") or []
        specials = {*roles.values(), *(_content(t) for t in extra if isinstance(t, (str, dict)))}
        for content, i in (checkpoint.read_json("added_tokens.json") or {}).items():
            added.setdefault(int(i), AddedToken(content, int(i), special=content in specials, normalized=False))
    files.added = sorted(added.values(), key=lambda t: t.id)
    files.roles = roles
    files.model_ids = {
        role: model_config[f"{role}_id"] for role in ROLES if isinstance(model_config.get(f"{role}_id"), int)
    }
    return files


def read_vocab_and_merges(vocab_path: Path, merges_path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    try:
        vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        lines = Path(merges_path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read the tokenizer files {vocab_path}, {merges_path}: {e}") from None
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    if not isinstance(vocab, dict) or any(len(pair) != 2 for pair in merges):
        raise CheckpointError(f"{vocab_path} and {merges_path} are not a GPT-2 vocabulary and merges list")
    check_vocab(vocab, vocab_path)
    return vocab, merges


def check_vocab(vocab: dict, where) -> None:
    """A vocabulary maps each token to an id of its own (the BPE engine would panic on a shared one)."""
    ids = list(vocab.values())
    if not all(type(i) is int and 0 <= i < 2**31 for i in ids) or len(set(ids)) != len(ids):
        raise CheckpointError(f"{where} must map each token to an id of its own (a whole number, 0 or more)")


def _refuse_other_kinds(checkpoint: Checkpoint) -> None:
    """No tokenizer.json, no vocab.json + merges.txt: say what is there instead, and what to do."""
    for filename, kind in (
        ("tokenizer.model", "a SentencePiece model (tokenizer.model)"),
        ("spiece.model", "a SentencePiece model (spiece.model)"),
        ("tokenizer.tiktoken", "a tiktoken vocabulary (tokenizer.tiktoken)"),
    ):
        if filename in checkpoint.files:
            raise CheckpointError(
                f"{checkpoint.source} has {kind} and no tokenizer.json; minigpt2 reads tokenizer.json or vocab.json + "
                "merges.txt: save the tokenizer once with transformers (AutoTokenizer...save_pretrained) to get one"
            )
    raise CheckpointError(
        f"{checkpoint.source} has no tokenizer: neither tokenizer.json nor vocab.json + merges.txt"
        + checkpoint.offline_hint()
    )


def _content(value) -> str:
    """A special token as the files write it: a string, or {"content": ..., ...}."""
    return value["content"] if isinstance(value, dict) else str(value)


def _added_token(i: int, token) -> AddedToken:
    if isinstance(token, str):
        return AddedToken(token, i)
    flags = ("special", "lstrip", "rstrip", "single_word", "normalized")
    return AddedToken(token["content"], i, **{k: bool(token[k]) for k in flags if k in token})


def _json_added_tokens(tokenizer_json: dict | None) -> list[AddedToken]:
    if tokenizer_json is None:
        return []
    return [_added_token(int(t["id"]), t) for t in tokenizer_json.get("added_tokens") or []]
