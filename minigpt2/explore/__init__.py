"""The explorer: one offline HTML page that shows a generation step by step, driven by the real model.

    from minigpt2.explore import explore
    page = explore(model, tokenizer, "Once upon a time", max_new_tokens=20)
    page.save("page.html")          # open it in a browser; it needs no network

What the page holds, for every step of the loop (page.py encodes it, page.js draws it):
- the prompt's tokens and ids, the token picked at each step, and the text so far;
- the K most likely next tokens under the scores the loop picked from (after the processors);
- every layer's and head's attention pattern over the tokens read so far;
- the logit lens: each layer's top next token and its probability at every position;
- direct logit attribution: what each embedding, head, attention bias and MLP adds to the picked
  token's logit (attribution.py);
- given an SAE (sae.py), its most active features at every position, read at its hook point.

The loop runs once, as generate() does, with a KV cache. The patterns, the lens and the attribution
then come from forward passes over the finished sequence: causal attention makes each position's
numbers the same as when the loop computed them, up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..generation import GenerationConfig, run_to_end
from ..interp.attribution import decompose_resid, logit_contributions
from ..interp.internals import run_with_cache
from ..interp.sae import SAE, run_with_sae, top_features
from ..writing import check_writable, write_atomically

LENS_ROWS = 512  # positions x layers unembedded at once for the logit lens: about 100 MB of logits for GPT-2


@dataclass
class Exploration:
    """Everything the page shows. n steps; T = prompt_len + n - 1 positions the model read; K candidates."""

    model_name: str
    n_layer: int
    n_head: int
    tokens: list[int]  # prompt + the n new tokens
    prompt_len: int
    strings: dict[int, str]  # each token id the page names, as text
    prompt_text: str  # the prompt's tokens as text
    texts: list[str]  # [n] the text after each step
    candidate_ids: torch.Tensor  # [n, K] the most likely next tokens at each step, best first
    candidate_probs: torch.Tensor  # [n, K] their probabilities: softmax of the scores the loop picked from
    picked_probs: torch.Tensor  # [n] the picked token's probability under the same softmax
    patterns: torch.Tensor  # [L, H, T, T] attention patterns over the positions read (query, key)
    lens_ids: torch.Tensor  # [L, T] the logit lens: each block's output's top next token
    lens_probs: torch.Tensor  # [L, T] and its probability
    attribution_labels: list[str]  # "embed", "pos_embed", "L{i}H{h}", "L{i} attn bias", "L{i} mlp"
    attribution: torch.Tensor  # [n, pieces] each piece's direct contribution to the picked token's logit
    attribution_bias: torch.Tensor  # [n] the final LayerNorm's bias's share of it
    picked_logits: torch.Tensor  # [n] the picked token's logit, which the pieces and the bias add up to
    sae_hook: str | None = None  # with an SAE: the point it reads
    sae_ids: torch.Tensor | None = None  # [T, K] its most active features at each position, strongest first
    sae_values: torch.Tensor | None = None  # [T, K] and their activations

    @property
    def steps(self) -> int:
        return len(self.tokens) - self.prompt_len

    def html(self) -> str:
        from .page import render

        return render(self)

    def save(self, path) -> int:
        """Write the page to path (atomically: a reader never sees half a page); returns its size in bytes."""
        data = self.html().encode()
        return write_atomically(path, lambda partial: partial.write_bytes(data))


def explore(
    model,
    tokenizer,
    prompt: str,
    output=None,
    *,
    candidates: int = 10,
    model_name: str = "",
    on_step=None,
    config: GenerationConfig | None = None,
    sae: SAE | None = None,
    **options,
) -> Exploration:
    """Generate from prompt as model.generate() would, then gather what the page shows.

    options: generate()'s, e.g. max_new_tokens=40, do_sample=True, seed=1, repetition_penalty=1.2
    (one row: no beams, no num_return_sequences), over `config` if one is given. candidates: how many next
    tokens each step lists.
    output: a path to write the page to (checked before the model runs), or None to write it later
    with .save(path). on_step(step): called as each token arrives, e.g. to show progress. sae: an SAE
    whose features the page shows (read with its error term, so the model's numbers stay its own).
    """
    if output is not None:
        check_writable(output)
    if candidates < 1:
        raise ValueError(f"candidates must be at least 1, got {candidates}")
    if sae is not None and sae.hook_name not in model.hook_names():
        raise ValueError(f"the SAE reads {sae.hook_name}, which this model does not have")
    if config is None:
        config = GenerationConfig.build(model.generation_defaults, **options)
    elif options:
        config = config.replace(**options)
    if config.beams or config.num_return_sequences > 1:
        raise ValueError("the page follows one row step by step: drop num_beams and num_return_sequences")
    input_ids, _ = tokenizer.encode_batch([prompt])
    input_ids = input_ids.to(model.wte.weight.device)
    prompt_len = input_ids.size(1)

    picked, top_ids, top_probs, picked_probs = [], [], [], []

    def keep(step):
        probs = step.scores[0].float().softmax(dim=-1)  # what the token was picked from
        best = probs.topk(min(candidates, probs.size(-1)))
        token = step.tokens[0]
        picked.append(int(token))
        top_ids.append(best.indices)
        top_probs.append(best.values)
        picked_probs.append(probs[token])
        if on_step is not None:
            on_step(step)

    with torch.inference_mode():
        run_to_end(model.stream(input_ids, config=config, tokenizer=tokenizer), keep)
    if not picked:
        raise ValueError("the generation added no tokens; ask for at least one (max_new_tokens=1 or more)")
    tokens = input_ids[0].tolist() + picked
    read = torch.tensor([tokens[:-1]], device=input_ids.device)  # every position that predicted a token
    patterns, lens_ids, lens_probs = _patterns_and_lens(model, read)
    labels, attribution, bias, logits = _attribution(model, read, prompt_len, picked)

    candidate_ids = torch.stack(top_ids).cpu()
    shown = {*tokens, *candidate_ids.flatten().tolist(), *lens_ids.flatten().tolist()}
    exploration = Exploration(
        model_name=model_name,
        n_layer=model.config.n_layer,
        n_head=model.config.n_head,
        tokens=tokens,
        prompt_len=prompt_len,
        strings={t: tokenizer.decode([t]) for t in sorted(shown)},
        prompt_text=tokenizer.decode(tokens[:prompt_len]),
        texts=[tokenizer.decode(tokens[: prompt_len + i + 1]) for i in range(len(picked))],
        candidate_ids=candidate_ids,
        candidate_probs=torch.stack(top_probs).cpu(),
        picked_probs=torch.stack(picked_probs).cpu(),
        patterns=patterns,
        lens_ids=lens_ids,
        lens_probs=lens_probs,
        attribution_labels=labels,
        attribution=attribution,
        attribution_bias=bias,
        picked_logits=logits,
    )
    if sae is not None:
        _, features = run_with_sae(model, read, sae, use_error_term=True)
        values, ids = top_features(features[0], candidates)
        exploration.sae_hook, exploration.sae_ids, exploration.sae_values = sae.hook_name, ids.cpu(), values.cpu()
    if output is not None:
        exploration.save(output)
    return exploration


def _patterns_and_lens(model, read: torch.Tensor):
    """Attention patterns [L, H, T, T] and the logit lens's top token and probability [L, T]."""
    names = [n for n in model.hook_names() if n.endswith(("attn.hook_pattern", "hook_resid_post"))]
    _, acts = run_with_cache(model, read, names)
    patterns = torch.stack([acts[n][0] for n in names if n.endswith("hook_pattern")]).float().cpu()
    resid = torch.stack([acts[n][0] for n in names if n.endswith("hook_resid_post")])  # [L, T, C]
    lens_ids, lens_probs = [], []
    with torch.inference_mode():
        for rows in resid.flatten(0, 1).split(LENS_ROWS):  # [rows, V] logits at a time
            logits = model.unembed(model.ln_f(rows)).float()
            top = logits.max(dim=-1)
            lens_ids.append(top.indices.cpu())
            lens_probs.append((top.values - logits.logsumexp(dim=-1)).exp().cpu())  # its softmax probability
    return patterns, torch.cat(lens_ids).view(resid.shape[:2]), torch.cat(lens_probs).view(resid.shape[:2])


def _attribution(model, read: torch.Tensor, prompt_len: int, picked: list[int]):
    """Each piece's direct contribution to each picked token's logit, at the position that picked it."""
    parts = decompose_resid(model, read, heads=True)
    positions = list(range(prompt_len - 1, read.size(1)))
    tokens = torch.tensor(picked, device=read.device)
    contributions, bias = logit_contributions(model, parts, positions, model.unembedding.detach()[tokens])
    logits = parts.logits[0, positions, tokens]
    return parts.labels, contributions[:, 0].T.float().cpu(), bias.float().cpu(), logits.float().cpu()
