"""minigpt2/cli/: the `minigpt2` command as users run it (generate, explore, export). Output on stdout, the same
text the library gives (and transformers generates), and one clear line on stderr for bad input.

run_cli runs main() in this process; the tests that need a fresh interpreter (an environment from the start,
a pipe to `head`, scripts/generate.py as the entry point) run one. The parity tool's own command line: test_parity.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, read_page, run_cli, run_python, run_script, stop_string_across_a_token_boundary
from safetensors.torch import load_file, save_file

# ---- generate: the loop ----


def test_prints_the_greedy_continuation(tiny_checkpoint):
    result = run_script("generate.py", "Once upon a time", "--model", str(tiny_checkpoint), "--max-new-tokens", "20")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time") and len(result.stdout) > len("Once upon a time\n")
    assert result.stderr == ""  # progress goes to a terminal only
    for fast_or_plain in ("--no-cache", "--onednn"):  # the same greedy text by every path
        other = run_cli("Once upon a time", "--model", str(tiny_checkpoint), "--max-new-tokens", "20", fast_or_plain)
        assert other.stdout == result.stdout, fast_or_plain


def test_max_length_and_several_sequences(tiny_checkpoint):
    result = run_cli(
        "Hello", "--model", str(tiny_checkpoint), "--max-length", "12", "--num-return-sequences", "2", "--seed", "3"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line[:3] for line in lines] == ["0: ", "1: "]
    assert lines[0][3:] == lines[1][3:]  # greedy rows are identical, as in transformers


def test_a_reader_that_stops_early_is_not_an_error(tiny_checkpoint):
    """`minigpt2 ... | head -1`: output the reader no longer wants is dropped quietly, as Unix tools do (exit 141)."""
    script, prompt = ROOT / "scripts" / "generate.py", "Once upon a time"
    args = f"--model {tiny_checkpoint} --max-new-tokens 100 --explain 50"  # ~80 kB: more than a pipe holds
    command = f"{sys.executable} {script} '{prompt}' {args} | head -2"  # the defaults' line, then step 1
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=300)
    assert result.stdout.startswith("defaults from ") and result.stdout.count("\n") == 2
    assert result.stdout.splitlines()[1].startswith("step 1: picked")
    assert result.stderr == "" and result.returncode == 141


def test_python_dash_m_minigpt2_is_the_command():
    """python -m minigpt2, as the package's own entry point: the same command, the same help."""
    result = run_python("-m", "minigpt2", "parity", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: minigpt2 parity"), result.stderr


def test_help():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in (
        "--model",
        "--max-new-tokens",
        "--max-length",
        "--num-return-sequences",
        "--device",
        "--dtype",
        "--no-cache",
        "--seed",
        "--do-sample",
        "--temperature",
        "--top-k",
        "--top-p",
        "--stream",
        "--explain",
        "--onednn",
        "--compile",
    ):
        assert option in result.stdout


def corrupt(directory):
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])


def not_gpt2(directory):
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_type": "bert"}))


@pytest.mark.parametrize(
    "args, breakage, env, message",
    [
        (["--model", "./does/not/exist"], None, {}, "no such file or directory"),
        (["--model", "{ckpt}"], corrupt, {}, "not a readable safetensors file"),
        (["--model", "{ckpt}"], not_gpt2, {}, "describes a 'bert' model, not GPT-2"),
        (["--model", "{ckpt}", "--max-new-tokens", "500"], None, {}, "longer than the model's context (128)"),
        (["--model", "{ckpt}", "--max-length", "2"], None, {}, "max_length (2) is shorter than the prompt"),
        (
            ["--model", "gpt2-medium"],
            None,
            {"HF_HUB_OFFLINE": "1"},
            "not in the local hub cache and the hub cannot be reached",
        ),
        (
            ["--model", "{ckpt}", "--device", "cuda:9"],
            None,
            {"CUDA_VISIBLE_DEVICES": ""},
            "is not available on this machine",
        ),
        (
            ["--model", "{ckpt}", "--max-new-tokens", "-4"],
            None,
            {},
            "argument --max-new-tokens: expected a whole number",
        ),
        (["--model", "{ckpt}", "--max-new-tokens", "3", "--max-length", "9"], None, {}, "not allowed with argument"),
        (["--model", "{ckpt}", "--dtype", "float8"], None, {}, "argument --dtype: invalid choice"),
        (["--model", "{ckpt}", "--num-return-sequences", "0"], None, {}, "argument --num-return-sequences"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_and_no_traceback(
    tiny_checkpoint, tmp_path, args, breakage, env, message
):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    if breakage:
        breakage(checkpoint)
    env = {"HF_HOME": str(tmp_path / "empty-hf-home"), **env} if env else None  # a fresh interpreter for those
    result = run_cli("Once upon a time", *[a.replace("{ckpt}", str(checkpoint)) for a in args], env=env)
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("minigpt2: error: ") and message in result.stderr
    assert "Traceback" not in result.stderr


def break_tensors(change):
    def breakage(directory):
        state = load_file(directory / "model.safetensors")
        change(state)
        save_file(state, directory / "model.safetensors")

    return breakage


@pytest.mark.parametrize(
    "args, breakage, message",
    [
        (["--do-sample", "--temperature", "0"], None, "temperature must be above 0"),
        (["--do-sample", "--top-p", "1.5"], None, "top_p must be in (0, 1]"),
        (["--top-k", "-1"], None, "argument --top-k: expected a whole number of at least 0"),
        (["--top-p", "0.5"], None, "top_p only applies when sampling"),
        (["--explain", "0"], None, "argument --explain: expected a whole number of at least 1"),
        (["--temperature", "warm"], None, "argument --temperature: expected a number"),
        ([], break_tensors(lambda s: s.pop("h.0.attn.c_attn.weight")), "missing: h.0.attn.c_attn.weight"),
        ([], break_tensors(lambda s: s.update(surplus=torch.zeros(2))), "unexpected: surplus"),
        ([], break_tensors(lambda s: s.update({"wpe.weight": torch.zeros(7, 64)})), "wrong shape: wpe.weight (7, 64)"),
        (["--stream", "--num-return-sequences", "2"], None, "--stream prints one row"),
        (["--compile", "--no-cache"], None, "argument --no-cache: not allowed with argument --compile"),
    ],
)
def test_cli_refuses_with_one_line(tiny_checkpoint, tmp_path, args, breakage, message):
    target = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, target)
    if breakage:
        breakage(target)
    result = run_cli("Hello", "--model", str(target), *args)
    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("checkpoint", ["finetuned_checkpoint", "kogpt2_checkpoint"])
@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_loop_script_prints_what_transformers_generates(checkpoint, stream, request):
    """A fine-tune saved by transformers 5 and the Korean GPT-2's layout: the text is transformers' own
    greedy continuation, decoded by transformers, up to the checkpoint's eos."""
    import torch
    from conftest import KOGPT2_CARD
    from transformers import AutoTokenizer, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = request.getfixturevalue(checkpoint)
    prompt = "<|user|>Once upon a time" if checkpoint == "finetuned_checkpoint" else "옛날 옛적에 작은 마을에"
    result = run_cli(prompt, "--model", str(path), "--max-new-tokens", "25", stream)
    assert result.returncode == 0, result.stderr
    if checkpoint == "finetuned_checkpoint":
        tokenizer = AutoTokenizer.from_pretrained(path)
    else:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path, **KOGPT2_CARD)
    ids = torch.tensor([tokenizer.encode(prompt)])
    reference = GPT2LMHeadModel.from_pretrained(path).eval()
    out = reference.generate(
        ids,
        max_new_tokens=25,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_mask=torch.ones_like(ids),
    )[0].tolist()
    if tokenizer.eos_token_id in out[ids.size(1) :]:
        out = out[: out.index(tokenizer.eos_token_id, ids.size(1))]
    assert result.stdout == tokenizer.decode(out) + "\n"


def test_cli_streams_the_same_text_it_prints_at_the_end(tiny_checkpoint):
    for prompt in ("안녕하세요 👋", "Once upon a time"):
        args = (prompt, "--model", str(tiny_checkpoint), "--max-new-tokens", "30")
        streamed, at_end = run_cli(*args, "--stream"), run_cli(*args, "--no-stream")
        assert streamed.returncode == at_end.returncode == 0, streamed.stderr + at_end.stderr
        assert streamed.stdout == at_end.stdout and streamed.stdout.startswith(prompt)


def test_cli_several_prompts_match_each_prompt_alone(tiny_checkpoint):
    args = ("--model", str(tiny_checkpoint), "--max-new-tokens", "15")
    both = run_cli("Hello", "The quick brown fox", *args)
    assert both.returncode == 0, both.stderr
    alone = [run_cli(prompt, *args).stdout for prompt in ("Hello", "The quick brown fox")]
    assert both.stdout == f"0: {alone[0]}1: {alone[1]}"  # each "i: text" line, as the prompt alone prints it


def test_cli_sampling_repeats_with_a_seed(tiny_checkpoint):
    args = ("Hello", "--model", str(tiny_checkpoint), "--max-new-tokens", "15", "--do-sample", "--top-p", "0.9")
    first, second = run_cli(*args, "--seed", "3"), run_cli(*args, "--seed", "3")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    three = run_cli(*args, "--seed", "4", "--num-return-sequences", "3", "--temperature", "1.5").stdout
    labels_and_texts = re.split(r"^(\d+): ", three, flags=re.MULTILINE)[1:]
    assert labels_and_texts[::2] == ["0", "1", "2"] and len(set(labels_and_texts[1::2])) == 3  # three samples


def test_loop_script_by_name_from_the_hub_cache(hub_home, tiny_checkpoint):
    by_name = run_cli("Once upon a time", "--max-new-tokens", "12", env=hub_home)
    by_path = run_cli("Once upon a time", "--max-new-tokens", "12", "--model", str(tiny_checkpoint))
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout == by_path.stdout
    assert by_name.stdout.startswith("Once upon a time")


# ---- generate: beams, processors and stop strings, --explain, --quantize ----


def test_cli_beam_search_prints_transformers_beams(tiny_checkpoint, tiny, reference):
    _, tokenizer = tiny
    result = run_cli(
        "Once upon a time", "--model", str(tiny_checkpoint), "--max-new-tokens", "12",
        "--num-beams", "4", "--num-return-sequences", "2", "--length-penalty", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ids = torch.tensor([tokenizer.encode("Once upon a time")])
    with torch.no_grad():
        theirs = reference.generate(
            ids, attention_mask=torch.ones_like(ids), num_beams=4, num_return_sequences=2, length_penalty=0.5,
            max_new_tokens=12, do_sample=False, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
    assert result.stdout == "".join(f"{i}: {tokenizer.decode(row.tolist())}\n" for i, row in enumerate(theirs))
    explained = run_cli(
        "Once upon a time", "--model", str(tiny_checkpoint), "--max-new-tokens", "3", "--num-beams", "2",
        "--explain", "2",
    )  # fmt: skip
    lines = [line for line in explained.stdout.splitlines() if line.startswith("step ")]
    assert len(lines) == 3 * 2 and lines[0].startswith("step 1 beam 0 (from 0): picked ")
    assert "logp=" in lines[0] and "sum=" in lines[0] and "| top 2:" in lines[0]


def test_cli_repetition_controls_and_stop(tiny_checkpoint, tiny, reference):
    _, tokenizer = tiny
    prompt = "Once upon a time"
    args = ["--repetition-penalty", "1.3", "--no-repeat-ngram-size", "2", "--min-new-tokens", "4"]
    result = run_cli(prompt, "--model", str(tiny_checkpoint), "--max-new-tokens", "20", *args)
    assert result.returncode == 0, result.stderr
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        theirs = reference.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False, repetition_penalty=1.3,
            no_repeat_ngram_size=2, min_new_tokens=4, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
    assert result.stdout == tokenizer.decode(theirs[0].tolist()) + "\n"
    stop = stop_string_across_a_token_boundary(tokenizer, theirs[0, ids.size(1) :])
    stopped = run_cli(prompt, "--model", str(tiny_checkpoint), "--max-new-tokens", "20", *args, "--stop", stop)
    assert stopped.returncode == 0, stopped.stderr
    assert stop in stopped.stdout and len(stopped.stdout) < len(result.stdout)  # it may end inside the last token
    for bad, message in [
        (["--no-repeat-ngram-size", "0"], "argument --no-repeat-ngram-size"),
        (["--repetition-penalty", "0"], "repetition_penalty must be above 0"),
        (["--num-beams", "x"], "argument --num-beams"),
        (["--num-beams", "2", "--num-return-sequences", "3"], "can be at most num_beams"),
    ]:
        failed = run_cli(prompt, "--model", str(tiny_checkpoint), "--max-new-tokens", "3", *bad)
        assert failed.returncode != 0 and failed.stdout == ""
        assert len(failed.stderr.splitlines()) == 1 and message in failed.stderr, failed.stderr


def test_explain_shows_every_step(tiny_checkpoint):
    for extra in ([], ["--do-sample", "--seed", "2"]):
        result = run_cli(
            "Once upon a time", "--model", str(tiny_checkpoint), "--max-new-tokens", "6", "--explain", "3", *extra
        )
        assert result.returncode == 0, result.stderr
        steps = [line for line in result.stdout.splitlines() if line.startswith("step ")]
        assert [line.split(":")[0] for line in steps] == [f"step {n}" for n in range(1, 7)]
        for line in steps:  # "step n: picked 'x' p=0.123 | top 3: 'a' 0.200  'b' 0.100  'c' 0.050"
            picked, candidates = re.fullmatch(r"step \d+: picked (.+) p=[01]\.\d{3} \| top 3: (.+)", line).groups()
            candidates = re.findall(r"('.*?'|\".*?\") ([01]\.\d{3})", candidates)
            assert len(candidates) == 3
            if not extra:  # greedy picks the most likely candidate
                assert picked == candidates[0][0]


@pytest.mark.parametrize("draft", ["--assistant", "--prompt-lookup"])
def test_assisted_summary_weighs_the_rounds_against_their_measured_cost(tiny_checkpoint, draft, monkeypatch):
    """The summary's cost of a round comes from timing the model at hand (generation.assisted.pass_cost),
    here made to cost 1 ms a token: a round of a k-token pass (and, with a draft model, its k - 1 draft
    steps) costs k plain steps, or 2k - 1; "slower" is said exactly where a round made fewer tokens."""
    from minigpt2.cli import generate

    monkeypatch.setattr(generate, "pass_cost", lambda model, tokens: tokens / 1000)
    value = str(tiny_checkpoint) if draft == "--assistant" else "3"
    result = run_cli(
        "Once upon a time, once upon a time", "--model", str(tiny_checkpoint), draft, value, "--max-new-tokens", "12"
    )
    assert result.returncode == 0, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    print(line)
    m = re.search(
        r"\(([0-9.]+) a pass\).*a round costs ([0-9.]+) plain steps here \(measured: a pass of (\d+) tokens ([0-9.]+)\)",
        line,
    )
    per_pass, cost, k, checked = float(m[1]), float(m[2]), int(m[3]), float(m[4])
    assert checked == k
    assert cost >= k and (draft != "--prompt-lookup" or cost == k)
    assert ("slower than plain decoding" in line) == (per_pass < cost)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_assisted_explain_runs_plain_greedy_and_says_how_long_the_tokens_agree(tiny_checkpoint, dtype):
    """--explain with a draft runs plain greedy too and reports the agreement it measured: in fp32 every token
    (the arithmetic is exact); in bf16 it says how many of the first tokens agree, whatever that is."""
    result = run_cli(
        "Once upon a time, once upon a time", "--model", str(tiny_checkpoint), "--prompt-lookup", "3",
        "--max-new-tokens", "12", "--explain", "2", "--dtype", dtype,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    print(line)
    assert line.startswith("minigpt2: plain greedy decoding (run to check, for --explain) makes the same")
    if dtype == "float32":
        assert line.endswith("the same 12 tokens")


def test_agreement_names_where_assisted_and_plain_greedy_part():
    from minigpt2.cli.generate import _agreement

    assert _agreement([1, 2, 3], [1, 2, 3]).endswith("the same 3 tokens")
    assert "the same first 1 of 3 tokens, then another" in _agreement([1, 5, 3], [1, 2, 3])
    assert "the same first 0 of 2 tokens" in _agreement([4, 2], [1, 2])


def test_cli_quantize_int8(tiny_checkpoint):
    result = run_cli("Once upon a time", "--model", str(tiny_checkpoint), "--max-new-tokens", "6", "--quantize", "int8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time")
    bad = run_cli("Once upon a time", "--model", str(tiny_checkpoint), "--quantize", "int4")
    assert bad.returncode == 2 and "invalid choice: 'int4'" in bad.stderr


# ---- export ----


def test_cli_export(tiny_checkpoint, tmp_path):
    pytest.importorskip("gguf", reason="needs the gguf package (the test and bench extras)")  # as in test_gguf.py
    out = tmp_path / "tiny.gguf"
    result = run_cli("export", str(tiny_checkpoint), "--gguf", str(out), "--type", "q8_0")
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: q8_0" in result.stdout and out.stat().st_size > 0
    assert not list(tmp_path.glob("*.partial"))
    bad = run_cli("export", str(tiny_checkpoint), "--gguf", str(tmp_path / "no" / "x.gguf"))
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1 and "does not exist" in bad.stderr
    wrong = run_cli("export", str(tiny_checkpoint), "--gguf", str(out), "--type", "q4")
    assert wrong.returncode == 2 and "invalid choice: 'q4'" in wrong.stderr


# ---- explore ----


def test_cli_writes_the_page(tiny_checkpoint, tmp_path):
    out = tmp_path / "page.html"
    result = run_cli("explore", "Hello", "--model", str(tiny_checkpoint), "--max-new-tokens", "5", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: 5 steps" in result.stdout
    data = read_page(out.read_text())
    assert len(data["tokens"]) - data["prompt_len"] == 5 and data["model"] == str(tiny_checkpoint)
    assert not re.search(r"""(src|href)=["']?https?:""", out.read_text())  # nothing fetched from a network


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "{tmp}/missing/page.html"], "the folder {tmp}/missing does not exist"),
        (["-o", "{tmp}"], "is a folder; give a file name in it"),
        (["--num-beams", "2"], "unrecognized arguments: --num-beams"),
        (["--max-new-tokens", "0"], "expected a whole number of at least 1"),
        (["--candidates", "x"], "expected a whole number of at least 1"),
        (["--temperature", "0", "--do-sample"], "temperature"),
    ],
)
def test_bad_input_is_one_line(tiny_checkpoint, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = ["-o", str(tmp_path / "page.html")] if "-o" not in args else []
    result = run_cli("explore", "Hi", "--model", str(tiny_checkpoint), *out, *args)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message.replace("{tmp}", str(tmp_path)) in result.stderr


def test_an_unwritable_output_is_refused_before_the_model_loads(tmp_path):
    result = run_cli("explore", "--model", str(tmp_path / "no-such-model"), "-o", str(tmp_path / "no" / "page.html"))
    assert (
        result.returncode == 1 and "does not exist; create it" in result.stderr and "no-such-model" not in result.stderr
    )
