"""The generation loop: score the next token, pick one, append it, repeat.

With a KV cache the prompt is run once and every later step feeds only the newest token;
without one (use_cache=False) every step feeds the whole sequence again, as the classic
tutorial loop does. Both pick the same tokens.

Picking is greedy (argmax) unless do_sample=True, which draws from the softmax of the scores
after temperature, top-k and top-p, in that order, with the meaning transformers gives them.
Arguments keep transformers' generate() names: max_new_tokens / max_length, attention_mask,
eos_token_id, pad_token_id, num_return_sequences, do_sample, temperature, top_k, top_p.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

DEFAULT_TOP_K = 50  # transformers' default when sampling; top_k=0 turns it off


@dataclass
class Step:
    """One step of the loop, as stream() yields it."""

    tokens: torch.Tensor  # [B] the token appended to each row (pad_token_id for finished rows)
    logits: torch.Tensor  # [B, V] the model's next-token scores it was picked from
    sequences: torch.Tensor  # [B, T + n] every row so far, prompt included
    finished: torch.Tensor  # [B] rows that have emitted eos_token_id


def generate(model, input_ids: torch.Tensor, max_new_tokens: int | None = None, **options) -> torch.Tensor:
    """Continue input_ids [B, T] -> [B * num_return_sequences, T + n]; options as for stream().

    n is max_new_tokens (or max_length - T), or fewer when every row has emitted eos_token_id.
    """
    sequences = input_ids.repeat_interleave(options.get("num_return_sequences", 1), dim=0)
    for step in stream(model, input_ids, max_new_tokens, **options):
        sequences = step.sequences
    return sequences.to(model.wte.weight.device)


def stream(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int | None = None,
    *,
    max_length: int | None = None,
    attention_mask: torch.Tensor | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    num_return_sequences: int = 1,
    do_sample: bool = False,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    compile: bool = False,
) -> Iterator[Step]:
    """The loop, one Step per new token: `for step in model.stream(ids, max_new_tokens=20): ...`.

    max_new_tokens / max_length: exactly one; tokens to add, or the total length as in transformers.
    attention_mask [B, T]: 1 for real tokens, 0 for left padding (Tokenizer.encode_batch makes both).
    eos_token_id: a row that emits it is finished and gets pad_token_id (default: eos_token_id) from
        then on; the loop stops once every row has finished.
    num_return_sequences: rows per prompt (samples, or identical greedy rows).
    do_sample: draw instead of argmax, after temperature (default 1), top_k (default 50, 0 for
        none), top_p (default 1: none); seed= or generator= makes the draws repeatable.
    use_cache=False: feed the whole sequence every step, as the tutorial's loop does (same tokens).
    compile=True: after the prompt, every step runs model.decode_step compiled by torch.compile
        (with CUDA graphs on a GPU), which removes the per-operation overhead that bounds a small
        model on a GPU. The first call compiles (a minute or more); the cache then spans the whole
        context, so that later calls of any length reuse the compiled step.
    Every argument is checked here, before the first forward pass.
    """
    config = model.config
    _check_ids(input_ids, config.vocab_size)
    B, T = input_ids.shape
    total = _total_length(T, max_new_tokens, max_length)
    if total > config.n_positions:
        raise ValueError(
            f"prompt ({T} tokens) + new tokens ({total - T}) = {total} is longer than the model's context "
            f"({config.n_positions}); ask for fewer new tokens or shorten the prompt"
        )
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be at least 1, got {num_return_sequences}")
    pad_token_id = eos_token_id if pad_token_id is None else pad_token_id
    for name, token in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if token is not None:
            _check_in_vocabulary(name, token, config.vocab_size)
    device = model.wte.weight.device
    pick = _picker(do_sample, temperature, top_k, top_p, seed, generator, device)
    padded = _check_attention_mask(attention_mask, B, T)
    if compile and not use_cache:
        raise ValueError("compile=True compiles the cached decode step; it needs use_cache=True")

    k = num_return_sequences
    out = torch.empty(B * k, total, dtype=torch.long, device=device)  # filled left to right
    out[:, :T] = input_ids.to(device).repeat_interleave(k, dim=0)
    mask = None  # only needed when there is padding: the fast path stays mask-free
    if padded:
        mask = torch.ones(B * k, total, dtype=torch.long, device=device)
        mask[:, :T] = attention_mask.to(device).repeat_interleave(k, dim=0)
    cache = model.new_cache(B * k, config.n_positions if compile else total) if use_cache else None
    next_logits = _compiled_scorer(model, out, T, mask, cache) if compile else _scorer(model, out, mask, cache)
    return _loop(out, T, next_logits, pick, eos_token_id, pad_token_id)


@torch.inference_mode()
def _loop(out, T, next_logits, pick, eos_token_id, pad_token_id) -> Iterator[Step]:
    finished = torch.zeros(out.size(0), dtype=torch.bool, device=out.device)
    for i in range(T, out.size(1)):
        logits = next_logits(i)  # [B, V]: the scores for the token at position i
        tokens = pick(logits)  # [B]
        if eos_token_id is not None:
            tokens = torch.where(finished, pad_token_id, tokens)
            finished |= tokens == eos_token_id
        out[:, i] = tokens
        yield Step(tokens, logits, out[:, : i + 1], finished)
        if eos_token_id is not None and bool(finished.all()):
            return


def _scorer(model, out, mask, cache) -> Callable[[int], torch.Tensor]:
    """i -> the next-token logits [B, V] after out[:, :i], from the model's forward pass.

    With a cache, only what it has not seen yet goes in: the prompt first, then one token a step.
    Without one, the whole sequence goes in every step.
    """

    def next_logits(i):
        context = out[:, cache.length : i] if cache is not None else out[:, :i]
        return model(context, cache, attention_mask=None if mask is None else mask[:, :i])[:, -1]

    return next_logits


def _compiled_scorer(model, out, T, mask, cache) -> Callable[[int], torch.Tensor]:
    """As _scorer, but every token after the prompt goes through the compiled model.decode_step."""
    prompt = _scorer(model, out, mask, cache)
    step = model.compiled_decode_step()
    visible = torch.zeros(out.size(0), cache.max_len, dtype=torch.bool, device=out.device)  # [B, max_len]
    visible[:, :T] = True if mask is None else mask[:, :T].bool()
    # The cache is written inside the compiled step: CUDA graphs may only do that to a tensor that stays put.
    torch._dynamo.mark_static_address(cache.keys)
    torch._dynamo.mark_static_address(cache.values)

    def next_logits(i):
        if i == T:
            return prompt(i)  # the prompt, in one ordinary forward pass that fills the cache
        visible[:, i - 1] = True
        logits = step(out[:, i - 1 : i], cache, torch.tensor([i - 1], device=out.device), visible)
        cache.length = i
        return logits

    return next_logits


def filter_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0
) -> torch.Tensor:
    """Scores [B, V] divided by temperature, with all but the top_k highest, then all outside the
    smallest set whose probability reaches top_p (at least one token), set to -inf."""
    logits = logits.float() / temperature
    if top_k:
        kth_best = logits.topk(min(top_k, logits.size(-1))).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop = mass_before >= top_p  # the top token has 0 before it, so it always stays
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def _picker(do_sample, temperature, top_k, top_p, seed, generator, device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The rule that turns next-token scores [B, V] into tokens [B]."""
    if not do_sample:
        given = [
            name for name, v in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p)) if v is not None
        ]
        if given:
            raise ValueError(
                f"{given[0]} only applies when sampling: add do_sample=True (--do-sample); greedy is the default"
            )
        return lambda logits: logits.argmax(dim=-1)
    temperature = 1.0 if temperature is None else temperature
    top_k = DEFAULT_TOP_K if top_k is None else top_k
    top_p = 1.0 if top_p is None else top_p
    if not temperature > 0:
        raise ValueError(f"temperature must be above 0, got {temperature}; for greedy decoding leave do_sample off")
    if top_k < 0:
        raise ValueError(f"top_k must be 0 (no limit) or more, got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    if seed is not None:
        generator = torch.Generator(device).manual_seed(seed)

    def sample(logits):
        probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return sample


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


def _check_attention_mask(attention_mask, B: int, T: int) -> bool:
    """Whether the prompts are padded; padding must be on the left, so that new tokens follow real ones."""
    if attention_mask is None:
        return False
    if attention_mask.shape != (B, T):
        raise ValueError(f"attention_mask must have the prompt's shape {[B, T]}, got {list(attention_mask.shape)}")
    if not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
    if (attention_mask[:, 1:] < attention_mask[:, :-1]).any():
        raise ValueError("attention_mask has padding after a real token; pad prompts on the left")
    if not attention_mask[:, -1].all():
        raise ValueError("attention_mask has a row that is all padding; every prompt needs at least one token")
    return not bool(attention_mask.all())


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
