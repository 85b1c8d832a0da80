"""minigpt2/moved.py: the module paths from before the layout's second pass import the moved modules
themselves, so that code written against them keeps working."""

import importlib

import pytest

from minigpt2.moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_is_the_moved_module(old):
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_from_imports_of_old_paths_work():
    from minigpt2.internals import run_with_cache  # noqa: F401
    from minigpt2.parity.checkpoints import write_checkpoint

    from minigpt2.interp.internals import run_with_cache as moved
    from minigpt2.testing import write_checkpoint as testing

    assert write_checkpoint is testing and run_with_cache is moved
