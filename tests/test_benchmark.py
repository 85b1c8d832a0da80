"""The benchmark script runs end to end (its numbers are reported, never asserted)."""

from conftest import run_script


def test_benchmark_smoke(tiny_checkpoint):
    result = run_script("benchmark.py", "--model", str(tiny_checkpoint), "--rounds", "1", "--new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert "minigpt2 / transformers" in result.stdout
