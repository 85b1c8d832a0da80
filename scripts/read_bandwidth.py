"""The machine's read bandwidth, measured by a plain C loop rather than a torch kernel: every thread
sums its share of an array far larger than the caches, with 16 independent accumulators so the adds
never wait on each other. Compiled at run time with the system's C compiler and OpenMP."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = r"""
#include <stddef.h>
float read_all(const float *a, size_t n, int threads) {
    float total = 0;
    #pragma omp parallel num_threads(threads) reduction(+:total)
    {
        float acc[16] = {0};
        #pragma omp for schedule(static)
        for (size_t i = 0; i < n - n % 16; i += 16)
            for (int j = 0; j < 16; j++) acc[j] += a[i + j];
        for (int j = 0; j < 16; j++) total += acc[j];
    }
    return total;
}
"""


def c_read_probe(n_bytes: int, threads: int):
    """A run for median_rates that reads n_bytes once and returns the bytes read; or (None, why not)."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None, "no C compiler (set CC): the bound comes from torch's probes alone"
    folder = Path(tempfile.mkdtemp())
    (folder / "read.c").write_text(SOURCE)
    build = [compiler, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "read.c", "-o", "libread.so"]
    done = subprocess.run(build, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"the C probe did not compile ({done.stderr.strip().splitlines()[-1:]})"
    library = ctypes.CDLL(str(folder / "libread.so"))
    library.read_all.restype = ctypes.c_float
    library.read_all.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    array = torch.ones(n_bytes // 4)

    def run():
        library.read_all(array.data_ptr(), array.numel(), threads)
        return array.numel() * 4

    return run, None
