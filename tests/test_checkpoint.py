"""minigpt2/checkpoint.py: resolving a name or a path to a Checkpoint. Official names and org/name repos
from huggingface_hub's cache offline (as a real download leaves it) and from a hub on loopback (each file
fetched once, shards as their index names them), pinned revisions, clear errors for what is not there,
local paths (no revision; a weights file given directly), and shard indexes that point outside their folder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import LOAD_AND_GENERATE, MAIN, OLDER, run_python

from minigpt2 import GPT2, CheckpointError, Tokenizer

LOAD_BY_NAME = (
    """
import json, torch
from minigpt2 import GPT2, Tokenizer
from minigpt2.checkpoint import resolve
tok = Tokenizer.from_pretrained("gpt2-medium")
prompt = torch.tensor([tok.encode("Once upon a time")])
print(json.dumps({
    "config": str(resolve("gpt2-medium").path("config.json")),
    "main": GPT2.from_pretrained("gpt2-medium").generate(prompt, max_new_tokens=12).tolist(),
    "org_name": GPT2.from_pretrained("someone/tiny-gpt2").generate(prompt, max_new_tokens=12).tolist(),
    "pinned_width": GPT2.from_pretrained("gpt2-medium", revision=%r).config.vocab_size,
}))
"""
    % OLDER
)


def test_official_name_loads_from_the_hub_cache_offline(hub_home, tiny, tiny_saved_checkpoint):
    result = run_python("-c", LOAD_BY_NAME, env=hub_home)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["config"].startswith(hub_home["HF_HOME"])
    assert f"models--openai-community--gpt2-medium/snapshots/{MAIN}/config.json" in got["config"]

    local, tokenizer = tiny
    prompt = torch.tensor([tokenizer.encode("Once upon a time")])
    expected = local.generate(prompt, max_new_tokens=12).tolist()
    assert got["main"] == expected and got["org_name"] == expected
    assert (
        got["pinned_width"] == GPT2.from_pretrained(tiny_saved_checkpoint).config.vocab_size != local.config.vocab_size
    )


def test_names_not_in_the_cache_fail_clearly_offline(hub_home):
    code = """
from minigpt2 import GPT2, CheckpointError
for name, kwargs in [("gpt2", {}), ("nobody/nothing", {}), ("gpt2-medium", {"revision": "v9"})]:
    try:
        GPT2.from_pretrained(name, **kwargs)
    except CheckpointError as e:
        print(e)
"""
    result = run_python("-c", code, env=hub_home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert all("is not in the local hub cache and the hub cannot be reached" in line for line in lines)
    assert "openai-community/gpt2 " in lines[0] and "nobody/nothing" in lines[1] and "gpt2-medium@v9" in lines[2]


def test_a_hub_load_resolves_once_and_requests_each_file_once(fake_hub, tiny_checkpoint, tiny):
    """Online (a hub on loopback): minigpt2.load asks for the revision's commit and file list once, then each
    file it reads once, all at that commit; loading again from the filled cache asks for the commit alone."""
    hub, env = fake_hub
    commit = "d" * 40
    hub.add("someone/tiny", commit, {p.name: p for p in tiny_checkpoint.iterdir() if p.is_file()})
    model, tokenizer = tiny
    expected = model.generate(torch.tensor([tokenizer.encode("Once upon a time")]), max_new_tokens=12)
    for load in ("first", "second"):
        hub.requests.clear()
        result = run_python("-c", LOAD_AND_GENERATE, "someone/tiny", "Once upon a time", env=env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == expected.tolist()
        about_the_repo = [(method, path) for method, path in hub.requests if "someone/tiny" in path]
        print(f"\n{load} load: {about_the_repo}")
        assert about_the_repo[0] == ("GET", "/api/models/someone/tiny")  # the one resolution
        files = [path.rsplit("/", 1)[1] for _, path in about_the_repo[1:]]
        assert all(f"/resolve/{commit}/" in path for _, path in about_the_repo[1:])  # all from that commit
        if load == "first":  # each file it reads: its metadata, then its bytes, once
            assert sorted(files) == sorted(2 * ["config.json", "model.safetensors", "vocab.json", "merges.txt"])
            assert [m for m, _ in about_the_repo[1:]] == ["HEAD", "GET"] * 4
        else:
            assert files == []


@pytest.mark.parametrize(
    "repo, revision, message",
    [
        ("nobody/nothing", None, "'nobody/nothing' is neither a local path nor a model repo on the hub"),
        ("someone/tiny", "v9", "has no revision 'v9'"),
        ("someone/empty", None, "has no config.json; is it a GPT-2 checkpoint"),
    ],
)
def test_hub_answers_become_one_clear_error(fake_hub, tiny_checkpoint, repo, revision, message):
    hub, env = fake_hub
    hub.add("someone/tiny", "e" * 40, {"config.json": tiny_checkpoint / "config.json"})
    hub.add("someone/empty", "f" * 40, {"README.md": tiny_checkpoint / "config.json"})
    code = f"""
from minigpt2 import GPT2, CheckpointError
try:
    GPT2.from_pretrained({repo!r}, revision={revision!r})
except CheckpointError as e:
    print(e)
"""
    result = run_python("-c", code, env=env)
    assert result.returncode == 0, result.stderr
    assert message in result.stdout and len(result.stdout.splitlines()) == 1


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


@pytest.mark.parametrize(
    "name, error, message",
    [
        ("./no/such/dir", FileNotFoundError, "no such file or directory"),
        ("no such model", FileNotFoundError, "not a hub repo id"),
    ],
)
def test_missing_paths(name, error, message):
    with pytest.raises(error, match=message):
        GPT2.from_pretrained(name)


def test_local_paths_take_no_revision_and_only_weights_files(tiny_checkpoint):
    with pytest.raises(ValueError, match="applies to hub repos"):
        GPT2.from_pretrained(tiny_checkpoint, revision="main")
    with pytest.raises(CheckpointError, match="is not a weights file"):
        GPT2.from_pretrained(tiny_checkpoint / "config.json")


def test_a_shard_index_that_points_outside_its_folder_is_refused(finetuned_checkpoint, tmp_path):
    target = tmp_path / "bad-index"
    shutil.copytree(finetuned_checkpoint, target)
    (target / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"wte.weight": "../x"}}))
    with pytest.raises(CheckpointError, match="names files outside its own folder"):
        GPT2.from_pretrained(target)
    (target / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="is not a readable shard index"):
        GPT2.from_pretrained(target)
