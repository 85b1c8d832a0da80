"""An Exploration as one self-contained HTML page: page.html with page.css and page.js written into it,
and the numbers as base64 typed arrays in a JSON block (page.js reads them back; see DATA below)."""

from __future__ import annotations

import base64
import ctypes
import html
import json
from pathlib import Path

import torch

ASSETS = Path(__file__).parent

# How each array is stored (little-endian, as the typed arrays of every browser and torch's CPUs read).
# Attention patterns are the bulk (layers x heads x positions^2 / 2): one byte each, the probability
# rounded to a multiple of 1/255, which is finer than a heatmap's colours; everything else is exact.
DATA = {
    "candidate_ids": torch.int32,
    "candidate_probs": torch.float32,
    "picked_probs": torch.float32,
    "lens_ids": torch.int32,
    "lens_probs": torch.float32,
    "attribution": torch.float32,
    "attribution_bias": torch.float32,
    "picked_logits": torch.float32,
}
PATTERN_LEVELS = 255


def render(exploration) -> str:
    data = {
        "model": exploration.model_name,
        "layers": exploration.n_layer,
        "heads": exploration.n_head,
        "tokens": exploration.tokens,
        "prompt_len": exploration.prompt_len,
        "strings": exploration.strings,
        "prompt_text": exploration.prompt_text,
        "texts": exploration.texts,
        "k": exploration.candidate_ids.size(1),
        "labels": exploration.attribution_labels,
        "patterns": _base64(packed_patterns(exploration.patterns)),
    }
    data |= {name: _base64(getattr(exploration, name).to(dtype)) for name, dtype in DATA.items()}
    if exploration.sae_hook is not None:
        data["sae"] = {
            "hook": exploration.sae_hook,
            "k": exploration.sae_ids.size(1),
            "ids": _base64(exploration.sae_ids.to(torch.int32)),
            "values": _base64(exploration.sae_values.to(torch.float32)),
        }
    # ensure_ascii escapes U+2028/9; "<" only ever occurs inside strings, where \u003c keeps a
    # prompt such as "</script>" from ending the block.
    block = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")
    page = (ASSETS / "page.html").read_text()
    title = html.escape(f"minigpt2 explore: {exploration.model_name or 'GPT-2'}")
    page = page.replace("{{TITLE}}", title).replace("/*STYLE*/", (ASSETS / "page.css").read_text())
    page = page.replace("/*SCRIPT*/", (ASSETS / "page.js").read_text())
    return page.replace("{{DATA}}", block)  # last: nothing is looked for inside the data


def packed_patterns(patterns: torch.Tensor) -> torch.Tensor:
    """[L, H, T, T] -> uint8 [L, H, T(T+1)/2]: each query's row up to itself (the rest is masked to 0)."""
    T = patterns.size(-1)
    rows, cols = torch.tril_indices(T, T)
    return (patterns[..., rows, cols] * PATTERN_LEVELS).round().to(torch.uint8)


def _base64(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    raw = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())  # the tensor's bytes, copied at C speed
    return base64.b64encode(raw).decode("ascii")
