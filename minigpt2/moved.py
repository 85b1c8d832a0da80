"""Module paths from before the layout's second pass keep working: `import minigpt2.internals` (or `from
minigpt2.internals import run_with_cache`) gives minigpt2.interp.internals itself, not a copy."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "minigpt2.activations": "minigpt2.nonlinearities",
    "minigpt2.attribution": "minigpt2.interp.attribution",
    "minigpt2.heads": "minigpt2.interp.heads",
    "minigpt2.internals": "minigpt2.interp.internals",
    "minigpt2.kernels": "minigpt2.loading.kernels",
    "minigpt2.output": "minigpt2.writing",
    "minigpt2.parity.checkpoints": "minigpt2.testing.checkpoints",
    "minigpt2.patching": "minigpt2.interp.patching",
    "minigpt2.plots": "minigpt2.interp.plots",
    "minigpt2.processing": "minigpt2.interp.processing",
    "minigpt2.quantize": "minigpt2.loading.quantize",
    "minigpt2.sae": "minigpt2.interp.sae",
}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass  # the module it names has run already


sys.meta_path.append(_OldPaths())
