"""Writing what a command makes (a page, a GGUF file): a path that cannot be written is refused in one
line before any work is done, and the file appears whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def check_writable(path) -> None:
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name in it, such as {path / path.name}.out")
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: the folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"cannot write {path}: permission denied; choose a path you can write")


def write_atomically(path, write: Callable[[Path], None]) -> int:
    """write(partial_path) makes the file beside path, which then replaces path; returns its size in bytes."""
    path = Path(path)
    check_writable(path)
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path.stat().st_size
