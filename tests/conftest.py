"""What every test file shares: checkpoints built here with transformers' own random init, one session-wide
tiny model (`tiny`) and its transformers twin (`reference`), a hub cache filled as a download leaves it, a
hub on loopback, and the helpers that run the command line and fresh interpreters.

Session fixtures are shared by every file: a test may read them, never change them (weights, gradients,
train/eval mode, submodules, hooks). Each one checks at the end of the session that it was left as built.
A test that needs to change a model loads its own.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from scoring_cases import long_text  # noqa: E402

from minigpt2 import GPT2Config  # noqa: E402
from minigpt2.testing.checkpoints import SAMPLE_TEXTS, write_checkpoint  # noqa: E402

# The suite runs on every core through pytest-xdist (pyproject's addopts): each worker's torch gets its share
# of the cores, so that the workers' matrix products do not fight over them.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


# What minigpt2 keeps in the user's cache (fast=True's kernel timings, tokens of read-only data) goes to a
# folder of the run's own, for this process and the command lines it starts.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="minigpt2-tests-cache-")


def pytest_collection_modifyitems(items):
    """Every test at the gpt2-medium shape runs in one worker, so that its checkpoint and models (1.4 GB each)
    are built and held once."""
    for item in items:
        if "medium_checkpoint" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("medium"))


LOGIT_TOLERANCE = 1e-4  # max abs difference of fp32 logits against transformers

# GPT-2's own init (std 0.02) leaves a tiny random model's activations so small that a wrong GELU
# moves the logits by less than the tolerance, and its greedy text repeats one token. A wider
# init (transformers' own, through initializer_range) gives logits of several units and varied
# greedy text, so mistakes show far above the tolerance (test_parity checks that they do).
TINY_INIT = 0.2
MEDIUM_INIT = 0.05  # wider still would put fp32 rounding over 24 layers close to the tolerance


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Official layout, tiny shape, with its own trained byte-level BPE vocabulary."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny"), shape="tiny", tokenizer=True, initializer_range=TINY_INIT)


def left_as_built(module: torch.nn.Module):
    """A check, for a session fixture's teardown, that no test changed `module`: its tensors, gradients,
    submodules (their types, train/eval mode, hooks and plain attributes) are those it had when this was called."""

    def snapshot():
        tensors = {name: t.detach().clone() for name, t in module.state_dict().items()}
        parts = {
            name or "the model": (
                type(m),
                m.training,
                [len(hooks) for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks)],
                {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"},
            )
            for name, m in module.named_modules()
        }
        return tensors, parts

    tensors, parts = snapshot()

    def check():
        what = f"the shared {type(module).__name__}"
        now_tensors, now_parts = snapshot()
        assert tensors.keys() == now_tensors.keys(), f"a test added or removed tensors of {what}"
        changed = [name for name, t in tensors.items() if not torch.equal(t, now_tensors[name])]
        assert not changed, f"a test changed {what}'s tensors: {changed[:5]}"
        assert parts.keys() == now_parts.keys(), f"a test added or removed modules of {what}"
        for name, (kind, training, hooks, attributes) in parts.items():
            now_kind, now_training, now_hooks, now_attributes = now_parts[name]
            assert (kind, training, hooks) == (now_kind, now_training, now_hooks), f"a test changed {what}: {name}"
            assert attributes.keys() == now_attributes.keys() and all(
                attributes[k] is now_attributes[k] for k in attributes
            ), f"a test changed {what}'s attributes: {name}"
        grads = [name for name, p in module.named_parameters() if p.grad is not None]
        assert not grads, f"a test left gradients on {what}: {grads[:5]}"

    return check


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint):
    """(minigpt2 GPT2, Tokenizer) on the tiny checkpoint, as GPT2/Tokenizer.from_pretrained load it.
    Shared by every file: read it, never change it (load your own model for that)."""
    from minigpt2 import GPT2, Tokenizer

    model, tokenizer = GPT2.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)
    check = left_as_built(model)
    yield model, tokenizer
    check()


@pytest.fixture(scope="session")
def reference(tiny_checkpoint):
    """transformers' GPT2LMHeadModel on the tiny checkpoint (its default attention), in eval mode. Shared: read only."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()
    check = left_as_built(model)
    yield model
    check()


# A randomly initialised model with no files behind it, for the model and the loop on their own: a small
# vocabulary with its last id as eos, and a 32-token context that requests run into.
RANDOM_CONFIG = GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4, eos_token_id=96)


def random_prompt(batch=2, length=5, seed=0):
    """Seeded ids of the random model's vocabulary, eos (its last id) left out."""
    return torch.randint(
        0, RANDOM_CONFIG.vocab_size - 1, (batch, length), generator=torch.Generator().manual_seed(seed)
    )


@pytest.fixture(scope="session")
def random_model():
    """GPT2(RANDOM_CONFIG) with GPT-2's own init, seed 0, in eval mode. Shared: read only."""
    from minigpt2 import GPT2

    torch.manual_seed(0)
    model = GPT2(RANDOM_CONFIG).eval()
    check = left_as_built(model)
    yield model
    check()


@pytest.fixture(scope="session")
def tiny_saved_checkpoint(tmp_path_factory) -> Path:
    """save_pretrained layout ("transformer." prefixed keys), tiny shape."""
    return write_checkpoint(
        tmp_path_factory.mktemp("tiny-saved"),
        shape="tiny",
        layout="save_pretrained",
        seed=1,
        initializer_range=TINY_INIT,
    )


@pytest.fixture(scope="session")
def medium_checkpoint(tmp_path_factory) -> Path:
    """Official layout at the full gpt2-medium shape: 24 layers, 1024 wide, 16 heads, 1024 positions."""
    return write_checkpoint(tmp_path_factory.mktemp("medium"), shape="gpt2-medium", initializer_range=MEDIUM_INIT)


@pytest.fixture(scope="session")
def medium(medium_checkpoint):
    """(minigpt2 GPT2, transformers' GPT2LMHeadModel in eval mode) on the gpt2-medium-shaped checkpoint, loaded
    once for every test at that shape. Shared: read only."""
    from transformers import GPT2LMHeadModel

    from minigpt2 import GPT2

    ours, theirs = GPT2.from_pretrained(medium_checkpoint), GPT2LMHeadModel.from_pretrained(medium_checkpoint).eval()
    checks = [left_as_built(ours), left_as_built(theirs)]
    yield ours, theirs
    for check in checks:
        check()


def fill_hub_cache(
    hub_cache: Path, repo_id: str, files: dict[str, Path], commit: str, ref: str | None = "main"
) -> None:
    """Lay files out as huggingface_hub's cache does after a download of `repo_id` at `commit`.

    models--org--name/blobs/<etag> holds the content (sha256 for LFS files such as weights, the
    git blob sha1 otherwise); snapshots/<commit>/<file> links to it; refs/<ref> names the commit.
    """
    repo_dir = hub_cache / f"models--{repo_id.replace('/', '--')}"
    for name, source in files.items():
        data = Path(source).read_bytes()
        if name.endswith((".safetensors", ".bin")):
            etag = hashlib.sha256(data).hexdigest()
        else:
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = repo_dir / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo_dir / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)


MAIN = "a" * 40  # hub_home: the commit that refs/main points to
OLDER = "b" * 40  # hub_home: a commit reachable only by its hash
HUB_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")


@pytest.fixture
def hub_home(tmp_path, tiny_checkpoint, tiny_saved_checkpoint):
    """HF_HOME whose cache holds openai-community/gpt2-medium (main and an older commit) and someone/tiny."""
    hub = tmp_path / "hf" / "hub"
    files = {name: tiny_checkpoint / name for name in HUB_FILES}
    fill_hub_cache(hub, "openai-community/gpt2-medium", files, commit=MAIN)
    fill_hub_cache(hub, "someone/tiny-gpt2", files, commit=MAIN)
    older = {
        **files,
        "config.json": tiny_saved_checkpoint / "config.json",
        "model.safetensors": tiny_saved_checkpoint / "model.safetensors",
    }
    fill_hub_cache(hub, "openai-community/gpt2-medium", older, commit=OLDER, ref=None)
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def fake_hub(tmp_path):
    """(a FakeHub on loopback, the environment that points huggingface_hub at it with an empty HF_HOME)."""
    from fake_hub import FakeHub

    hub = FakeHub()
    yield hub, {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    hub.close()


# python -c LOAD_AND_GENERATE NAME PROMPT: minigpt2.load(NAME), then 12 greedy tokens, printed as JSON.
LOAD_AND_GENERATE = """
import json, sys, torch, minigpt2
model, tokenizer = minigpt2.load(sys.argv[1])
ids = torch.tensor([tokenizer.encode(sys.argv[2])])
print(json.dumps(model.generate(ids, max_new_tokens=12).tolist()))
"""


def run_python(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """python ARGV in a fresh interpreter, so that the hub's environment variables take effect from the start."""
    return subprocess.run(
        [sys.executable, *argv], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300
    )


def run_script(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A script of scripts/ as a user runs it: python scripts/SCRIPT ARGS."""
    return run_python(str(ROOT / "scripts" / script), *args, env=env)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The loop script with ARGS: the `minigpt2` command's main() in this process, stdout and stderr
    captured (as a pipe: no terminal), or, when env is given, python scripts/generate.py ARGS in a fresh
    interpreter that starts with that environment."""
    if env is not None:
        return run_script("generate.py", *args, env=env)
    from minigpt2.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's --help and its errors
            code = exit.code
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


# Prompts of different lengths: one left-padded batch.
PADDED_PROMPTS = ["Once upon a time", "Hello", "The quick brown fox jumps"]


@pytest.fixture(scope="session")
def padded_batch(tiny, reference):
    """(minigpt2 model, transformers model, tokenizer, input_ids, attention_mask, liked): `tiny` and
    `reference` with one left-padded batch of PADDED_PROMPTS.

    liked: the token greedy decoding picks most often. The tiny model rarely picks its real eos, so
    this one stands in for it where rows must end early.
    """
    model, tokenizer = tiny
    input_ids, attention_mask = tokenizer.encode_batch(PADDED_PROMPTS)
    greedy = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=30)
    liked = torch.bincount(greedy[:, input_ids.size(1) :].flatten()).argmax().item()
    return model, reference, tokenizer, input_ids, attention_mask, liked


@pytest.fixture(scope="session")
def finetuned_checkpoint(tmp_path_factory) -> Path:
    """A fine-tune as transformers 5 saves it: tokenizer.json only, added tokens, resized vocabulary, shards."""
    return write_checkpoint(tmp_path_factory.mktemp("finetuned"), layout="finetuned", initializer_range=TINY_INIT)


@pytest.fixture(scope="session")
def kogpt2_checkpoint(tmp_path_factory) -> Path:
    """The Korean GPT-2's layout: a SentencePiece-style BPE tokenizer.json, eos in config.json, a .bin."""
    return write_checkpoint(tmp_path_factory.mktemp("kogpt2"), layout="kogpt2", initializer_range=TINY_INIT)


def worst_deviation(expected: torch.Tensor, frequency: torch.Tensor, draws: int) -> float:
    """How far drawn frequencies [V] are from the expected probabilities [V], in standard errors.

    Tokens expected at least 20 times are checked one by one; the rarer ones (where a normal
    approximation fails) are checked together, as one group.
    """
    common = expected * draws >= 20
    groups_expected = torch.cat([expected[common], expected[~common].sum().view(1)])
    groups_seen = torch.cat([frequency[common], frequency[~common].sum().view(1)])
    standard_error = (groups_expected * (1 - groups_expected) / draws).sqrt().clamp(min=1e-12)
    return ((groups_seen - groups_expected).abs() / standard_error).max().item()


def hooked_transformer(hf_model, **processing) -> "transformer_lens.HookedTransformer":  # noqa: F821
    """TransformerLens 3's HookedTransformer holding a transformers GPT2LMHeadModel's weights, built offline
    (from_pretrained would look the official name up on the hub). processing: load_and_process_state_dict's
    flags (fold_ln, center_writing_weights, center_unembed, fold_value_biases), all off by default."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    c = hf_model.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn=c.activation_function,
        eps=c.layer_norm_epsilon, normalization_type="LN", original_architecture="GPT2LMHeadModel",
        default_prepend_bos=True, dtype=torch.float32,
    )  # fmt: skip
    model = HookedTransformer(cfg)
    flags = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)
    model.load_and_process_state_dict(convert_gpt2_weights(hf_model, cfg), **{**flags, **processing})
    return model.eval()


PATCHING_CLEAN = [[5, 17, 42, 99, 7, 3, 64]]
PATCHING_CORRUPTED = [[5, 17, 81, 99, 7, 3, 64]]  # one token changed


@pytest.fixture(scope="session")
def patching_case(tiny):
    """The patching tests' case: the tiny model, a clean and a corrupted prompt, and the logit difference
    of their two predictions."""
    model, _ = tiny
    clean, corrupted = torch.tensor(PATCHING_CLEAN), torch.tensor(PATCHING_CORRUPTED)
    with torch.no_grad():
        answer = model(clean)[0, -1].argmax().item()  # the clean run's prediction
        rival = model(corrupted)[0, -1].argmax().item()
    if answer == rival:
        rival = (answer + 1) % model.config.vocab_size

    def metric(logits):
        return logits[:, answer] - logits[:, rival]

    return model, clean, corrupted, metric


# ---- scoring: token rows and a long text of the tiny tokenizer (tests/scoring_cases.py) ----


@pytest.fixture(scope="module")
def rows(tiny):
    """Token rows of different lengths (2 to ~60 tokens) of the tiny tokenizer."""
    _, tokenizer = tiny
    texts = [SAMPLE_TEXTS[0], "Hello there", SAMPLE_TEXTS[5], "a b"]
    return [tokenizer.encode(text) for text in texts]


@pytest.fixture(scope="module")
def long_ids(tiny):
    """~1500 tokens: a dozen windows of the tiny model's 128-token context, the last one shorter."""
    _, tokenizer = tiny
    text = long_text(700)
    ids = tokenizer.encode(text)
    assert len(ids) > 10 * tiny[0].config.n_positions, len(ids)
    return text, ids


# ---- shared by tests in more than one folder ----

KOGPT2_CARD = dict(bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def read_page(page: str) -> dict:
    """The numbers a page holds, as a browser's page.js reads them back."""
    block = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1)
    data = json.loads(block)
    dtypes = {"patterns": torch.uint8, "candidate_ids": torch.int32, "lens_ids": torch.int32, "ids": torch.int32}
    for name, value in [*data.items(), *(data.get("sae") or {}).items()]:
        where = data["sae"] if name in ("ids", "values") else data
        if isinstance(value, str) and name not in ("model", "prompt_text", "hook"):
            raw = bytearray(base64.b64decode(value))
            where[name] = torch.frombuffer(raw, dtype=dtypes.get(name, torch.float32)) if raw else torch.zeros(0)
    return data


def stop_string_across_a_token_boundary(tokenizer, row):
    """A short piece of a row's generated text that starts in one token and ends in the next."""
    tokens = row.tolist()
    for i in range(3, len(tokens) - 1):
        left, right = tokenizer.decode(tokens[i : i + 1]), tokenizer.decode(tokens[i + 1 : i + 2])
        if len(left) >= 2 and len(right) >= 2 and "\ufffd" not in left + right:
            return left[-2:] + right[:2]
    pytest.skip("no token boundary with two whole characters on each side")
