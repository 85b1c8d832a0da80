"""The README's Python examples run as written, in a fresh interpreter whose hub cache holds
openai-community/gpt2-medium (the tiny checkpoint under that name: hub_home), offline. The guides in docs/
are tested where their wing is."""

import re

from conftest import ROOT, run_python


def test_the_readmes_python_blocks_run_in_order(hub_home):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    result = run_python("-c", "\n".join(blocks), env=hub_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the first block prints the generated text"
