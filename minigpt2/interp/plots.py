"""Pictures of what attribution.py, patching.py, heads.py and internals.py compute, labelled with layer and head
numbers and the prompt's own tokens. Needs matplotlib (pip install "minigpt2[plots]"); each function
draws on `ax` (a new figure when None) and returns it."""

from __future__ import annotations

import torch


def _axes(ax, size=(7, 4)):
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('minigpt2.interp.plots draws with matplotlib: pip install "minigpt2[plots]"') from None
    return ax if ax is not None else plt.subplots(figsize=size)[1]


def token_labels(tokenizer, ids) -> list[str]:
    """Each token as text, with its position, for an axis: "3 ' time'"."""
    return [f"{i} {tokenizer.decode([int(t)])!r}" for i, t in enumerate(ids)]


def plot_patching(results: torch.Tensor, *, tokens: list[str] | None = None, title="activation patching", ax=None):
    """A sweep from activation_patching or attribution_patching: [layer, position] (tokens on the x axis)
    or [layer, head]."""
    values = results.detach().float().cpu().numpy()
    limit = float(abs(values).max()) or 1.0
    return _layer_grid(_axes(ax), values, tokens, title, cmap="RdBu", vmin=-limit, vmax=limit)


def plot_head_scores(scores: torch.Tensor, *, title="head scores", ax=None):
    """Head detector scores [layer, head] (heads.py: previous-token, duplicate-token, induction), 0 to 1."""
    values = scores.detach().float().cpu().numpy()
    return _layer_grid(_axes(ax), values, None, title, cmap="viridis", vmin=0.0, vmax=1.0)


def _layer_grid(ax, values, tokens, title, **colours):
    image = ax.imshow(values, aspect="auto", **colours)
    ax.set_ylabel("layer")
    ax.set_yticks(range(values.shape[0]))
    if tokens is not None:
        ax.set_xticks(range(len(tokens)), tokens, rotation=90)
        ax.set_xlabel("position")
    else:
        ax.set_xticks(range(values.shape[1]))
        ax.set_xlabel("head")
    ax.set_title(title)
    ax.figure.colorbar(image, ax=ax)
    return ax


def plot_attribution(attribution, *, sample: int = 0, title="direct logit attribution", ax=None):
    """A bar per piece of the stream (embeddings, layers or heads, MLPs): its direct contribution."""
    ax = _axes(ax, size=(max(6, len(attribution.labels) * 0.25), 4))
    values = attribution.contributions[:, sample].detach().float().tolist()
    ax.bar(range(len(values)), values, color=["tab:blue" if v >= 0 else "tab:red" for v in values])
    ax.set_xticks(range(len(values)), attribution.labels, rotation=90)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel("contribution to the logit")
    ax.set_title(f"{title} (total {attribution.logit[sample].item():.2f}, bias {attribution.bias[sample].item():.2f})")
    return ax


def plot_attention(pattern: torch.Tensor, tokens: list[str], *, title="attention pattern", ax=None):
    """One head's pattern [query, key] (or a mean over heads), queries down, keys across."""
    ax = _axes(ax, size=(5, 5))
    ax.imshow(pattern.detach().float().cpu().numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(tokens)), tokens, rotation=90)
    ax.set_yticks(range(len(tokens)), tokens)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title)
    return ax


def plot_logit_lens(lens: torch.Tensor, tokenizer, tokens: list[str], *, sample: int = 0, ax=None):
    """A layer x position grid from logit_lens: each cell's top token, shaded by its probability."""
    ax = _axes(ax, size=(max(6, len(tokens) * 0.9), max(3, lens.size(0) * 0.35)))
    probs, top = lens[:, sample].detach().float().max(dim=-1)  # [layer, position]
    ax.imshow(probs.cpu().numpy(), cmap="Greens", vmin=0, vmax=1, aspect="auto")
    for layer in range(top.size(0)):
        for position in range(top.size(1)):
            text = tokenizer.decode([top[layer, position].item()])
            ax.text(position, layer, repr(text)[1:-1][:8], ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(tokens)), tokens, rotation=90)
    ax.set_yticks(range(top.size(0)))
    ax.set_ylabel("layer")
    ax.set_title("logit lens: each layer's top next token")
    return ax
