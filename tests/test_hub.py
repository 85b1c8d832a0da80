"""The hub path, offline: official name -> repo -> huggingface_hub's cache, as a real download leaves it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import LOAD_AND_GENERATE, fill_hub_cache, run_cli, run_python

from minigpt2 import GPT2, Tokenizer

MAIN = "a" * 40  # commit that refs/main points to
OLDER = "b" * 40  # commit reachable only by its hash
FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")


@pytest.fixture
def hub_home(tmp_path, tiny_checkpoint, tiny_saved_checkpoint):
    """HF_HOME whose cache holds openai-community/gpt2-medium (main and an older commit) and someone/tiny."""
    hub = tmp_path / "hf" / "hub"
    files = {name: tiny_checkpoint / name for name in FILES}
    fill_hub_cache(hub, "openai-community/gpt2-medium", files, commit=MAIN)
    fill_hub_cache(hub, "someone/tiny-gpt2", files, commit=MAIN)
    older = {
        **files,
        "config.json": tiny_saved_checkpoint / "config.json",
        "model.safetensors": tiny_saved_checkpoint / "model.safetensors",
    }
    fill_hub_cache(hub, "openai-community/gpt2-medium", older, commit=OLDER, ref=None)
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}


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


def test_official_name_loads_from_the_hub_cache_offline(hub_home, tiny_checkpoint, tiny_saved_checkpoint):
    result = run_python("-c", LOAD_BY_NAME, env=hub_home)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["config"].startswith(hub_home["HF_HOME"])
    assert f"models--openai-community--gpt2-medium/snapshots/{MAIN}/config.json" in got["config"]

    local = GPT2.from_pretrained(tiny_checkpoint)
    prompt = torch.tensor([Tokenizer.from_pretrained(tiny_checkpoint).encode("Once upon a time")])
    expected = local.generate(prompt, max_new_tokens=12).tolist()
    assert got["main"] == expected and got["org_name"] == expected
    assert (
        got["pinned_width"] == GPT2.from_pretrained(tiny_saved_checkpoint).config.vocab_size != local.config.vocab_size
    )


def test_loop_script_by_name_from_the_hub_cache(hub_home, tiny_checkpoint):
    by_name = run_cli("Once upon a time", "--max-new-tokens", "12", env=hub_home)
    by_path = run_cli("Once upon a time", "--max-new-tokens", "12", "--model", str(tiny_checkpoint))
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout == by_path.stdout
    assert by_name.stdout.startswith("Once upon a time")


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


def test_a_hub_load_resolves_once_and_requests_each_file_once(fake_hub, tiny_checkpoint):
    """Online (a hub on loopback): minigpt2.load asks for the revision's commit and file list once, then each
    file it reads once, all at that commit; loading again from the filled cache asks for the commit alone."""
    hub, env = fake_hub
    commit = "d" * 40
    hub.add("someone/tiny", commit, {p.name: p for p in tiny_checkpoint.iterdir() if p.is_file()})
    expected = GPT2.from_pretrained(tiny_checkpoint).generate(
        torch.tensor([Tokenizer.from_pretrained(tiny_checkpoint).encode("Once upon a time")]), max_new_tokens=12
    )
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
