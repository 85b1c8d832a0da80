"""The benchmark script runs end to end (its numbers are reported, never asserted)."""

import subprocess
import sys

from conftest import ROOT


def test_benchmark_smoke(tiny_checkpoint):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "benchmark.py"),
            "--model",
            str(tiny_checkpoint),
            "--rounds",
            "1",
            "--new-tokens",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "minigpt2 / transformers" in result.stdout
