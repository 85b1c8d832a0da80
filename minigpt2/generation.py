"""The generation loop: pick the most likely next token, append it, repeat.

With a KV cache the prompt is run once and every later step feeds only the newest token;
without one (use_cache=False) every step feeds the whole sequence again, as the classic
tutorial loop does. Both pick the same tokens.
"""

from __future__ import annotations

import torch


@torch.inference_mode()
def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int | None = None,
    *,
    max_length: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    num_return_sequences: int = 1,
    use_cache: bool = True,
) -> torch.Tensor:
    """Greedy continuation of input_ids [B, T] -> [B * num_return_sequences, T + n].

    Give exactly one of max_new_tokens (tokens to add) or max_length (total length, as in
    transformers). With eos_token_id, a row that emits it is finished and gets pad_token_id
    (default: eos_token_id) from then on; the loop stops early once every row has finished,
    so n can be smaller than the number of new tokens asked for.
    """
    _check_ids(input_ids, model.config.vocab_size)
    T = input_ids.size(1)
    total = _total_length(T, max_new_tokens, max_length)
    if total > model.config.n_positions:
        raise ValueError(
            f"prompt ({T} tokens) + new tokens ({total - T}) = {total} is longer than the model's context "
            f"({model.config.n_positions}); ask for fewer new tokens or shorten the prompt"
        )
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be at least 1, got {num_return_sequences}")
    pad_token_id = eos_token_id if pad_token_id is None else pad_token_id
    for name, token in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if token is not None:
            _check_in_vocabulary(name, token, model.config.vocab_size)

    device = model.wte.weight.device
    prompt = input_ids.to(device).repeat_interleave(num_return_sequences, dim=0)
    out = torch.empty(prompt.size(0), total, dtype=torch.long, device=device)  # filled left to right
    out[:, :T] = prompt
    finished = torch.zeros(prompt.size(0), dtype=torch.bool, device=device)
    cache = model.new_cache(prompt.size(0), total) if use_cache else None

    for i in range(T, total):
        # With a cache, feed what it has not seen yet: the prompt first, then one token a step.
        context = out[:, cache.length : i] if cache is not None else out[:, :i]
        logits = model(context, cache)[:, -1]  # [B, V]: the next-token scores
        next_token = logits.argmax(dim=-1)  # [B]
        if eos_token_id is not None:
            next_token = torch.where(finished, pad_token_id, next_token)
            finished |= next_token == eos_token_id
        out[:, i] = next_token
        if eos_token_id is not None and bool(finished.all()):
            return out[:, : i + 1]
    return out


def _check_ids(input_ids, vocab_size: int) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise ValueError("input_ids must be a LongTensor of shape [batch, tokens], e.g. torch.tensor([ids])")
    if input_ids.size(1) == 0:
        raise ValueError("the prompt is empty; start from at least one token (GPT-2 uses its eos token as a start)")
    _check_in_vocabulary("token id", int(input_ids.min()), vocab_size)
    _check_in_vocabulary("token id", int(input_ids.max()), vocab_size)


def _check_in_vocabulary(name: str, token: int, vocab_size: int) -> None:
    if not 0 <= token < vocab_size:
        raise ValueError(f"{name} {token} is outside the vocabulary (0..{vocab_size - 1})")


def _total_length(prompt_len: int, max_new_tokens: int | None, max_length: int | None) -> int:
    """Total sequence length after generation, from exactly one of the two ways to ask for it."""
    if (max_new_tokens is None) == (max_length is None):
        raise ValueError("give exactly one of max_new_tokens (tokens to add) or max_length (total length)")
    if max_new_tokens is not None:
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be 0 or more, got {max_new_tokens}")
        return prompt_len + max_new_tokens
    if max_length < prompt_len:
        raise ValueError(f"max_length ({max_length}) is shorter than the prompt ({prompt_len} tokens)")
    return max_length
