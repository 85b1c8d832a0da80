"""This machine, as the measured choices see it: the CPU's description, and the record of what was timed
on it (fast=True's kernels, compile=True's verdict on the CPU), kept in $XDG_CACHE_HOME/minigpt2/kernels.json
(or ~/.cache/...), a file to read, and to delete to time again."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

from .writing import write_atomically

CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
)  # what decides the kernels


def record_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minigpt2" / "kernels.json"


def cpu_description() -> str:
    """The CPU's model and the flags that decide which kernels are fast (/proc/cpuinfo on Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    present = " ".join(f for f in CPU_FLAGS if f in flags) or "none of " + ", ".join(CPU_FLAGS)
    return f"{model or platform.machine()}; {present}"


def machine_key() -> str:
    return f"{cpu_description()}; torch {torch.__version__}; {torch.get_num_threads()} threads"


def measured() -> dict:
    """What was timed on this machine (with this torch and thread count): {what: verdict}."""
    return _mine(_record())


def keep(verdicts: dict) -> None:
    """Add verdicts ({what: verdict}) to this machine's record; a record that cannot be written says so in one
    line, and the verdicts hold for this process alone."""
    record = _record()
    record[machine_key()] = {**_mine(record), **verdicts}
    path = record_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda partial: partial.write_text(json.dumps(record, indent=1) + "\n"))
    except (OSError, ValueError) as error:
        print(f"minigpt2: could not keep what was timed ({error})", file=sys.stderr)


def _record() -> dict:
    """The whole record, every machine's; empty where there is none yet, or it is damaged (time again)."""
    try:
        record = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _mine(record: dict) -> dict:
    """This machine's verdicts in a record."""
    verdicts = record.get(machine_key())
    return verdicts if isinstance(verdicts, dict) else {}
