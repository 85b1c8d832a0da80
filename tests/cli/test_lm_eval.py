"""minigpt2/lm_eval: the `minigpt2` model of EleutherAI's lm-evaluation-harness, checked against lm-eval's own
`hf` model on the same checkpoint folder (the tiny random checkpoint). Every expected value comes from the
`hf` run in the test, never from numbers written here; every comparison prints the largest difference it saw.

    requests   loglikelihood, loglikelihood_rolling and generate_until called on both LM objects with the
               same Instances (batch_size 3): log-likelihoods within 1e-4, the same is-greedy flags, the same
               generated text (stop strings, eos, contexts cut to the model's context, a stop string that
               only the prompt and the first new token make together)
    evaluate   lm_eval.simple_evaluate on local YAML tasks over local JSONL files (multiple_choice,
               loglikelihood_rolling, generate_until): the same metrics and per-document answers
    command    docs/score.md's offline command as a user runs it, on its local task (docs/lm-eval/): exit 0
               and the metric table, with hf's figures, and minigpt2 multiple-choice's acc on the same file
    errors     bad model_args (a missing folder, a folder with no checkpoint, a bad batch size, an unknown
               key) fail at once with a message that names the problem; the command says it in one line,
               and names a task whose data cannot be fetched
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_cli

lm_eval = pytest.importorskip("lm_eval", reason='lm-eval is not installed (pip install "minigpt2[eval]")')

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import minigpt2.lm_eval  # noqa: E402,F401 - registers "minigpt2" with lm-eval
from minigpt2.lm_eval.__main__ import main  # noqa: E402
from minigpt2.testing.checkpoints import SAMPLE_TEXTS  # noqa: E402

TOLERANCE = 1e-4  # a log-likelihood (a sum of fp32 log-probabilities), and every metric, against `hf`
BATCH = 3  # requests per forward pass: several batches, padded, for every kind of request
# A rolling log-likelihood adds up windows of n_positions tokens, each of which `hf` sums in fp32 (minigpt2 in
# float64). The random model puts some 2000 nats in a 128-token window, where fp32's own spacing is 1.2e-4 to
# 2.4e-4: hf's figure is only that exact. Sums that large are compared to 1e-6 relative (about 8 fp32 steps).
SUM_RELATIVE = 1e-6
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def words(n: int, seed: int) -> str:
    """n words drawn (seeded) from the first SAMPLE_TEXTS: text the tiny vocabulary knows."""
    vocabulary = " ".join(SAMPLE_TEXTS[:3] + SAMPLE_TEXTS[5:7]).split()
    rng = random.Random(seed)
    return " ".join(rng.choice(vocabulary) for _ in range(n))


@pytest.fixture(scope="module", autouse=True)
def offline():
    """No hub and no datasets hub, for lm-eval, transformers and datasets (their flags are read at import,
    so the imported modules' own flags are set too)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in OFFLINE.items():
            patch.setenv(name, value)
        import datasets.config
        import huggingface_hub.constants

        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            patch.setattr(datasets.config, flag, True, raising=False)
        yield


@pytest.fixture(scope="module")
def lms(tiny_checkpoint):
    """(lm-eval's `hf`, `minigpt2`): the two LM objects, on the same checkpoint folder, as lm-eval builds them."""
    args = f"pretrained={tiny_checkpoint},batch_size={BATCH}"
    hf = get_model("hf").create_from_arg_string(args, {"device": "cpu"})
    ours = get_model("minigpt2").create_from_arg_string(args, {"device": "cpu"})
    assert type(ours).__name__ == "MiniGPT2LM" and ours.max_length == hf.max_length
    return hf, ours


def sum_close(got: float, expected: float) -> bool:
    """A log-likelihood: within 1e-4, or (for sums of thousands of nats) SUM_RELATIVE."""
    return math.isclose(got, expected, rel_tol=SUM_RELATIVE, abs_tol=TOLERANCE)


def instances(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, n) for n, a in enumerate(args)]


def greedy_text(reference, tokenizer, context: str, n: int) -> str:
    """The text of transformers' own n greedy tokens after `context`."""
    import torch

    ids = torch.tensor([tokenizer.encode(context)])
    with torch.no_grad():
        out = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return tokenizer.decode(out[0, ids.size(1) :].tolist())


# ---- the requests, on the LM objects ----


def test_loglikelihood(lms, tiny, reference):
    hf, ours = lms
    model, tokenizer = tiny
    context_length = model.config.n_positions
    long_context = words(45, seed=1)
    assert len(tokenizer.encode(long_context)) > context_length  # cut to the last n_positions + 1 tokens
    greedy_contexts = ["Once upon a time", "The quick brown fox", "def greet(name: str) -> str:"]
    requests = [
        ("Once upon a time", " there was a little girl"),
        ("", "Hello world"),  # no context: the prefix token (eos) stands for it
        ("The quick brown fox", " jumps"),
        ("Numbers 12345 ", "3.14159"),  # a context's trailing space moves to the continuation
        (long_context, " over the lazy dog."),
        ("café", " naïve résumé Ångström"),
        *[(c, greedy_text(reference, tokenizer, c, n)) for c, n in zip(greedy_contexts, (1, 2, 3), strict=True)],
    ]
    expected = hf.loglikelihood(instances("loglikelihood", requests))
    got = ours.loglikelihood(instances("loglikelihood", requests))
    diffs = [abs(a - b) for (a, _), (b, _) in zip(got, expected, strict=True)]
    flags = [greedy for _, greedy in expected]
    print(f"loglikelihood: {len(requests)} requests, max |diff| {max(diffs):.2e} vs hf; hf's is-greedy flags {flags}")
    assert max(diffs) < TOLERANCE
    assert [greedy for _, greedy in got] == flags
    assert any(flags) and not all(flags)  # both answers of the flag are checked


def test_loglikelihood_rolling(lms, tiny):
    hf, ours = lms
    model, tokenizer = tiny
    texts = ["Hello", "Once upon a time, there was a little girl.", words(20, seed=2), words(75, seed=3)]
    lengths = [len(tokenizer.encode(text)) for text in texts]
    assert max(lengths) > 2 * model.config.n_positions  # three windows of lm-eval's own
    expected = hf.loglikelihood_rolling(instances("loglikelihood_rolling", [(text,) for text in texts]))
    got = ours.loglikelihood_rolling(instances("loglikelihood_rolling", [(text,) for text in texts]))
    diffs = [abs(a - b) for a, b in zip(got, expected, strict=True)]
    relative = max(d / abs(e) for d, e in zip(diffs, expected, strict=True))
    print(
        f"loglikelihood_rolling: texts of {lengths} tokens, hf {expected}; "
        f"|diff| {[f'{d:.2e}' for d in diffs]} (max relative {relative:.2e})"
    )
    for a, b, n in zip(got, expected, lengths, strict=True):
        assert sum_close(a, b), (n, a, b)
    assert max(diffs[:3]) < TOLERANCE  # the texts that fit one window: 1e-4 absolute


def test_generate_until(lms, tiny):
    hf, ours = lms
    model, tokenizer = tiny
    long_context = words(45, seed=4)
    assert len(tokenizer.encode(long_context)) > model.config.n_positions  # left-truncated to make room
    contexts = ["Once upon a time", "The quick brown fox jumps over", "Hello", long_context]
    free = {"until": [], "max_gen_toks": 16}  # eos only
    expected_free = hf.generate_until(instances("generate_until", [(c, free) for c in contexts]))
    got_free = ours.generate_until(instances("generate_until", [(c, free) for c in contexts]))
    print(f"generate_until, no stop string: hf {expected_free}")
    assert got_free == expected_free
    assert len(set(expected_free)) == len(contexts) and all(len(text) > 4 for text in expected_free)

    # Stop strings that hf's texts meet halfway, all of them for every request (one group, batched).
    stops = [text[len(text) // 2 : len(text) // 2 + 2] for text in expected_free]
    stopped = {"until": [*stops, "\u2603never"], "max_gen_toks": 16}
    requests = [(c, stopped) for c in contexts]
    requests.append((contexts[0], {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}))  # another group
    # A stop string that the prompt's last character and the first new one make together is no stop:
    # lm-eval looks for stop strings in the generated text alone.
    n, across = next(
        (n, c[-1] + t[0]) for n, (c, t) in enumerate(zip(contexts, expected_free, strict=True)) if c[-1] + t[0] not in t
    )
    requests.append((contexts[n], {"until": [across], "max_gen_toks": 16}))
    expected = hf.generate_until(instances("generate_until", requests))
    got = ours.generate_until(instances("generate_until", requests))
    print(f"generate_until with stop strings {stops}, ['\\n'], [{across!r}]: hf {expected}")
    for free_text, text in zip(expected_free, expected, strict=False):  # hf itself stopped at the first one
        first = min((i for i in (free_text.find(stop) for stop in stops) if i >= 0), default=len(free_text))
        assert text == free_text[:first]
    assert expected[-1] == expected_free[n]  # no stop
    assert got == expected


def test_generate_until_is_greedy_whatever_generation_config_says(tmp_path, tiny_checkpoint):
    """A checkpoint whose generation_config.json samples: lm-eval's greedy requests stay greedy (hf passes
    do_sample=False), and the file's other settings (a repetition penalty) apply as hf applies them."""
    folder = tmp_path / "sampling-checkpoint"
    shutil.copytree(tiny_checkpoint, folder)
    eos = json.loads((folder / "config.json").read_text())["eos_token_id"]
    settings = {"do_sample": True, "temperature": 5.0, "top_k": 0, "repetition_penalty": 1.5}
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": eos, "eos_token_id": eos, **settings}))
    args = f"pretrained={folder},batch_size=2"
    hf = get_model("hf").create_from_arg_string(args, {"device": "cpu"})
    ours = get_model("minigpt2").create_from_arg_string(args, {"device": "cpu"})
    contexts = ["Once upon a time", "Hello", "The quick brown fox"]
    requests = instances("generate_until", [(c, {"until": ["\u2603"], "max_gen_toks": 16}) for c in contexts])
    expected = hf.generate_until(requests)
    print(f"generate_until with a sampling generation_config.json: hf {expected}")
    assert ours.generate_until(requests) == expected == hf.generate_until(requests)  # greedy: the same every time


def test_requests_show_progress_as_hf_does(lms, capsys):
    """lm-eval's progress bars on stderr, as its `hf` model draws them, unless lm-eval asks for none."""
    _, ours = lms
    ours.loglikelihood(instances("loglikelihood", [("Hello", " world")] * 4))
    ours.generate_until(instances("generate_until", [("Hello", {"until": ["."], "max_gen_toks": 2})] * 2))
    err = capsys.readouterr().err
    assert "Running loglikelihood requests: 100%" in err and "Running generate_until requests: 100%" in err
    ours.loglikelihood(instances("loglikelihood", [("Hello", " world")]), disable_tqdm=True)
    assert capsys.readouterr().err == ""


# ---- simple_evaluate and the command, on local tasks ----


def task_files(folder, tokenizer) -> None:
    """Three YAML tasks over local JSONL files (datasets' json builder: no hub), in `folder`."""
    rng = random.Random(5)
    choice = []
    for n in range(8):
        endings = [" " + words(rng.randint(1, 5), seed=100 + 4 * n + k) for k in range(4)]
        choice.append({"context": words(rng.randint(3, 12), seed=n), "endings": endings, "label": n % 4})
    texts = [{"text": text} for text in ("Hello there.", words(40, seed=6), words(60, seed=7))]
    assert len(tokenizer.encode(texts[-1]["text"])) > 128  # more than one window
    prompts = [{"question": words(rng.randint(2, 8), seed=50 + n), "answer": "the"} for n in range(4)]
    for name, rows in (("choice", choice), ("text", texts), ("prompts", prompts)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    common = "dataset_path: json\ntest_split: test\nmetadata:\n  version: 1.0\n"

    def data(name):
        return f"dataset_kwargs:\n  data_files:\n    test: {folder / name}.jsonl\n  cache_dir: {folder / 'cache'}\n"

    (folder / "choice.yaml").write_text(
        "task: minigpt2_tiny_choice\n" + common + data("choice") + "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{endings}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    (folder / "text.yaml").write_text(
        "task: minigpt2_tiny_perplexity\n" + common + data("text") + "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n"
    )
    (folder / "prompts.yaml").write_text(
        "task: minigpt2_tiny_generate\n" + common + data("prompts") + "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: [".", "\\n"]\n  max_gen_toks: 16\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n"
    )


TASKS = ["minigpt2_tiny_choice", "minigpt2_tiny_perplexity", "minigpt2_tiny_generate"]
PERPLEXITIES = ("word_perplexity", "byte_perplexity")  # exp(NLL / n): compared relatively


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, tiny):
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    task_files(folder, tiny[1])
    return folder


@pytest.fixture(scope="module")
def task_manager(task_dir):
    return TaskManager(include_path=str(task_dir), include_defaults=False)


def evaluate(model_name: str, checkpoint, task_manager) -> dict:
    return lm_eval.simple_evaluate(
        model=model_name,
        model_args=f"pretrained={checkpoint}",
        tasks=TASKS,
        task_manager=task_manager,
        device="cpu",
        batch_size=BATCH,
        bootstrap_iters=0,
        log_samples=True,
    )


@pytest.fixture(scope="module")
def hf_results(tiny_checkpoint, task_manager):
    return evaluate("hf", tiny_checkpoint, task_manager)


def metrics(results: dict) -> dict[tuple[str, str], float]:
    """{(task, metric): value} for every numeric figure of simple_evaluate's results (no stderr)."""
    return {
        (task, name.split(",")[0]): value
        for task, figures in results["results"].items()
        for name, value in figures.items()
        if "," in name and "stderr" not in name and isinstance(value, (int, float))
    }


def metric_close(metric: str, got: float, expected: float) -> bool:
    if metric in PERPLEXITIES:  # large numbers (a random model): within 1e-4 on the log scale
        return math.isclose(got, expected, rel_tol=TOLERANCE)
    return math.isclose(got, expected, rel_tol=0, abs_tol=TOLERANCE)


def test_simple_evaluate_on_local_tasks(tiny_checkpoint, task_manager, hf_results):
    ours = evaluate("minigpt2", tiny_checkpoint, task_manager)
    expected, got = metrics(hf_results), metrics(ours)
    assert {task for task, _ in expected} == set(TASKS) and expected.keys() == got.keys()
    diffs = {f"{task}/{name}": abs(got[task, name] - value) for (task, name), value in expected.items()}
    print(f"simple_evaluate: hf {expected}\n  |diff| {diffs}")
    for (task, name), value in expected.items():
        assert metric_close(name, got[task, name], value), (task, name, got[task, name], value)
    worst = 0.0  # every document's answers, not only the means
    for task in TASKS:
        theirs, mine = hf_results["samples"][task], ours["samples"][task]
        assert [s["doc_id"] for s in mine] == [s["doc_id"] for s in theirs]
        for a, b in zip(mine, theirs, strict=True):
            for x, y in zip(a["filtered_resps"], b["filtered_resps"], strict=True):
                if task == "minigpt2_tiny_generate":
                    assert x == y, (task, a["doc_id"])
                    continue
                if task == "minigpt2_tiny_choice":  # (log-likelihood, is-greedy) of each choice
                    assert x[1] == y[1], (task, a["doc_id"])
                    x, y = x[0], y[0]
                assert isinstance(x, float) and sum_close(x, y), (task, a["doc_id"], x, y)
                worst = max(worst, abs(x - y))
    print(f"simple_evaluate: max |diff| of a document's log-likelihood {worst:.2e}")


def table_figures(stdout: str) -> dict[tuple[str, str], float]:
    """{(task, metric): value} from the markdown table lm-eval prints."""
    figures, task = {}, None
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 7 or not re.fullmatch(r"-?[\d.]+(e[-+]?\d+)?", cells[6]):
            continue
        task = cells[0] or task
        figures[task, cells[4]] = float(cells[6])
    return figures


DEMO_TASK = "minigpt2_demo_choice"  # docs/lm-eval/demo_choice.yaml, the task of docs/score.md's offline run


def documented_command() -> tuple[dict[str, str], list[str]]:
    """The offline lm-eval command of docs/score.md: (its environment variables, its words)."""
    lines = (ROOT / "docs" / "score.md").read_text().splitlines()
    words = shlex.split(next(line for line in lines if "minigpt2.lm_eval" in line and "--include_path" in line))
    env = dict(word.split("=", 1) for word in words[: words.index("python")])
    return env, words[words.index("python") :]


@pytest.fixture
def in_the_root(tmp_path, monkeypatch):
    """The repository's root as the working folder (the demo task's data_files are relative to it), with
    datasets' cache in tmp_path."""
    import datasets.config

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))


def test_the_documented_offline_command_runs(tmp_path, tiny_checkpoint, in_the_root):
    """docs/score.md's command, word for word but for the model (the tiny checkpoint) and the interpreter."""
    env, words = documented_command()
    assert words[words.index("--model_args") + 1] == "pretrained=gpt2"
    words[words.index("--model_args") + 1] = f"pretrained={tiny_checkpoint}"
    command = [sys.executable, *words[1:]]
    started = time.monotonic()
    result = subprocess.run(
        command,
        check=False,
        env={**os.environ, **env, "HF_HOME": str(tmp_path / "hf")},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(f"{shlex.join(words)}: exit {result.returncode} in {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    assert result.stdout.lstrip().startswith("minigpt2 (")  # the model lm-eval ran: minigpt2, not hf
    tasks = TaskManager(include_path=str(ROOT / "docs" / "lm-eval"), include_defaults=False)
    hf = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={tiny_checkpoint}",
        tasks=[DEMO_TASK],
        task_manager=tasks,
        device="cpu",
        batch_size=8,
        bootstrap_iters=0,
    )
    expected = metrics(hf)
    figures = table_figures(result.stdout)
    assert figures.keys() == expected.keys() == {(DEMO_TASK, "acc"), (DEMO_TASK, "acc_norm")}, result.stdout
    for key, value in expected.items():  # the table rounds to 3 or 4 decimals
        assert abs(figures[key] - value) < 1e-3, (key, figures[key], value)
    # The same questions through minigpt2 multiple-choice: the same acc (each ending's summed log-likelihood).
    choice = run_cli(
        "multiple-choice", "docs/lm-eval/demo_choice.jsonl", "--model", str(tiny_checkpoint), "--json", "-"
    )
    assert choice.returncode == 0, choice.stderr
    assert math.isclose(json.loads(choice.stdout)["acc"], expected[DEMO_TASK, "acc"])


# ---- errors ----


def test_bad_model_args_fail_at_once_and_say_why(tmp_path, tiny_checkpoint, task_manager):
    missing = tmp_path / "no-such-model"
    started = time.monotonic()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        lm_eval.simple_evaluate(
            model="minigpt2", model_args=f"pretrained={missing}", tasks=TASKS[:1], task_manager=task_manager
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="config.json"):
        get_model("minigpt2").create_from_arg_string(f"pretrained={empty}", {"device": "cpu"})
    with pytest.raises(ValueError, match="batch_size"):
        get_model("minigpt2").create_from_arg_string(f"pretrained={tiny_checkpoint},batch_size=many", {})
    with pytest.raises(ValueError, match="dtype"):
        get_model("minigpt2").create_from_arg_string(f"pretrained={tiny_checkpoint},dtype=float13", {})
    # A misspelt key would leave its default in place (gpt2, not the user's model): refused, with the keys taken.
    with pytest.raises(ValueError, match=r"unknown model_args pretrainedd \(did you mean pretrained\?\);.* revision"):
        get_model("minigpt2").create_from_arg_string(f"pretrainedd={tiny_checkpoint}", {"device": "cpu"})
    with pytest.raises(ValueError, match="tokenizer= goes with a loaded model"):
        get_model("minigpt2").create_from_arg_string(f"pretrained={tiny_checkpoint},tokenizer=gpt2", {})
    elapsed = time.monotonic() - started
    print(f"bad model_args: six clear errors in {elapsed:.2f} s")
    assert elapsed < 30


def test_the_keys_lm_eval_adds_are_taken(tiny_checkpoint):
    """What lm-eval's CLI passes on its own: batch_size, max_batch_size and device beside model_args, and
    trust_remote_code=True in them under --trust_remote_code."""
    passed = {"batch_size": "auto", "max_batch_size": 4, "device": "cpu"}
    lm = get_model("minigpt2").create_from_arg_string(f"pretrained={tiny_checkpoint},trust_remote_code=True", passed)
    assert lm.batch_size_per_call == 4 and str(lm.device) == "cpu"


def run_command(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """python -m minigpt2.lm_eval ARGS in this process: (exit status, stderr's last line). lm-eval's own
    tasks are left out of its index (10 s each time): only --include_path's are found."""
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", functools.partial(TaskManager, include_defaults=False))
    monkeypatch.setattr(sys, "argv", ["minigpt2.lm_eval"])  # main() sets lm-eval's argv; restored after the test
    code = main([*args, "--device", "cpu"])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err.splitlines()[-1]


def test_the_command_says_what_is_wrong_in_one_line(tmp_path, tiny_checkpoint, task_dir, monkeypatch, capsys):
    local = ("--include_path", str(task_dir), "--tasks", TASKS[0])
    code, line = run_command(monkeypatch, capsys, "--model_args", f"pretrainedd={tiny_checkpoint}", *local)
    print(line)
    assert code == 1 and line.startswith("python -m minigpt2.lm_eval: error: unknown model_args pretrainedd")
    # A task whose data is on the hub, offline: the task named, and the way to run offline.
    folder = tmp_path / "hub-task"
    folder.mkdir()
    text = (task_dir / "choice.yaml").read_text().replace("minigpt2_tiny_choice", "minigpt2_hub_choice")
    (folder / "hub.yaml").write_text(text.replace("dataset_path: json\n", "dataset_path: someone/not-cached\n"))
    hub = ("--include_path", str(folder), "--tasks", "minigpt2_hub_choice")
    code, line = run_command(monkeypatch, capsys, "--model_args", f"pretrained={tiny_checkpoint}", *hub)
    print(line)
    assert code == 1 and "the data of task minigpt2_hub_choice could not be fetched" in line
    assert "someone/not-cached" in line and "--include_path" in line
