"""The generation loop: score the next token, process the scores, pick one, append it, repeat.

With a KV cache the prompt is run once and every later step feeds only the newest token;
without one (use_cache=False) every step feeds the whole sequence again, as the classic
tutorial loop does. Both pick the same tokens.

Picking is greedy (argmax) unless do_sample=True, which draws from the softmax of the scores
after temperature, top-k and top-p; num_beams > 1 runs beam search (beam.py). Before picking,
the scores go through the processors asked for (processors.py). Arguments keep the names and
meanings of transformers' generate(): max_new_tokens / max_length, attention_mask, eos_token_id,
pad_token_id, num_return_sequences, do_sample, temperature, top_k, top_p, num_beams,
length_penalty, early_stopping, repetition_penalty, no_repeat_ngram_size, bad_words_ids,
min_length, min_new_tokens, forced_eos_token_id, stop_strings (with tokenizer=), max_time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch

from . import beam, processors, stopping
from .steps import GenerateOutput, Step

__all__ = ["GenerateOutput", "Step", "generate", "run_to_end", "stream"]


def generate(model, input_ids: torch.Tensor, max_new_tokens: int | None = None, *, output_scores=False, **options):
    """Continue input_ids [B, T] -> [B * num_return_sequences, T + n]; options as for stream().

    n is max_new_tokens (or max_length - T), or fewer when every row has finished.
    output_scores=True: a GenerateOutput instead, with every step's processed scores.
    """
    scores, logprobs = [], []

    def keep(step):
        scores.append(step.scores)
        logprobs.append(step.logprobs)

    steps = stream(model, input_ids, max_new_tokens, **options)
    sequences, sequences_scores = run_to_end(steps, keep if output_scores else None)
    if not output_scores:
        return sequences
    beams = sequences_scores is not None
    token_logprobs = None if beams else torch.stack(logprobs, dim=1) if logprobs else sequences.new_zeros(0)
    return GenerateOutput(sequences, tuple(scores), token_logprobs, sequences_scores)


def run_to_end(steps: Iterator[Step], on_step: Callable[[Step], None] | None = None):
    """Run stream()'s steps to the end: (sequences, beam search's sequences_scores or None)."""
    while True:
        try:
            step = next(steps)
        except StopIteration as end:
            return end.value
        if on_step is not None:
            on_step(step)


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
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    bad_words_ids: list[list[int]] | None = None,
    min_length: int | None = None,
    min_new_tokens: int | None = None,
    forced_eos_token_id: int | None = None,
    stop_strings: str | list[str] | None = None,
    tokenizer=None,
    max_time: float | None = None,
    use_cache: bool = True,
    compile: bool = False,
) -> Iterator[Step]:
    """The loop, one Step per new token: `for step in model.stream(ids, max_new_tokens=20): ...`.

    max_new_tokens / max_length: exactly one; tokens to add, or the total length as in transformers.
    attention_mask [B, T]: 1 for real tokens, 0 for left padding (Tokenizer.encode_batch makes both).
    eos_token_id: a row that emits it is finished and gets pad_token_id (default: eos_token_id) from
        then on; the loop stops once every row has finished.
    num_return_sequences: rows per prompt (samples, identical greedy rows, or the best beams).
    do_sample: draw instead of argmax, after temperature (default 1), top_k (default 50, 0 for
        none), top_p (default 1: none); seed= or generator= makes the draws repeatable.
    num_beams > 1: beam search, keeping the num_beams best sequences per prompt; a finished one scores
        its summed log-probability / (new tokens ** length_penalty); early_stopping: True stops a
        prompt once num_beams sequences have finished, False when no running beam is likely to do
        better, "never" when none can (transformers' meanings).
    repetition_penalty (> 1 discourages tokens already there), no_repeat_ngram_size, bad_words_ids
        ([[ids of a word], ...]), min_length / min_new_tokens (eos held back until then),
        forced_eos_token_id (forced as the last token): processors, in transformers' order.
    stop_strings (needs tokenizer=): a row is done once its text ends in one; max_time: seconds,
        after which every row is done.
    use_cache=False: feed the whole sequence every step, as the tutorial's loop does (same tokens).
    compile=True: after the prompt, every step runs model.decode_step compiled by torch.compile
        (with CUDA graphs on a GPU), which removes the per-operation overhead that bounds a small
        model on a GPU. The first call compiles (a minute or more); the cache then spans the whole
        context, so that later calls of any length reuse the compiled step. Greedy and sampling only.
    Every argument is checked here, before the first forward pass. The generator returns
    (sequences, sequences_scores) when it ends; generate() is this loop run to its end.
    """
    started = time.monotonic()
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
    beams = beam.check(num_beams, num_return_sequences, do_sample, compile, length_penalty, early_stopping)
    if do_sample:
        pick = processors.sampler(temperature, top_k, top_p, seed, generator, device)
    else:
        _refuse_sampling_options(temperature=temperature, top_k=top_k, top_p=top_p)
        pick = _greedy
    padded = _check_attention_mask(attention_mask, B, T)
    if compile and not use_cache:
        raise ValueError("compile=True compiles the cached decode step; it needs use_cache=True")
    k = num_beams if beams else num_return_sequences  # rows per prompt
    padding = (T - attention_mask.sum(dim=1)) if padded else torch.zeros(B, dtype=torch.long)  # [B]
    padding = padding.repeat_interleave(k).to(device)  # [B * k]
    chain = processors.processors(
        vocab_size=config.vocab_size,
        prompt_length=T,
        total_length=total,
        padding=padding,
        eos_token_id=eos_token_id,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        bad_words_ids=bad_words_ids,
        min_length=min_length,
        min_new_tokens=min_new_tokens,
        forced_eos_token_id=forced_eos_token_id,
    )

    out = torch.full((B * k, total), pad_token_id if pad_token_id is not None else 0, device=device)
    out[:, :T] = input_ids.to(device).repeat_interleave(k, dim=0)
    mask = None  # only needed when there is padding: the fast path stays mask-free
    if padded:
        mask = torch.ones(B * k, total, dtype=torch.long, device=device)
        mask[:, :T] = attention_mask.to(device).repeat_interleave(k, dim=0)
    if stop_strings is not None and pad_token_id is None and B * k > 1:
        raise ValueError("stop_strings with several rows needs pad_token_id (or eos_token_id) for rows that stop early")
    stops = stopping.criteria(stop_strings=stop_strings, tokenizer=tokenizer, max_time=max_time, started=started)
    cache = model.new_cache(B * k, config.n_positions if compile else total) if use_cache else None
    next_logits = _compiled_scorer(model, T, mask, cache) if compile else _scorer(model, mask, cache)
    process = (lambda seqs, scores: processors.apply(chain, seqs, scores)) if chain else None
    if beams:
        return beam.search(
            out, T, num_beams, next_logits, process, cache,
            eos_token_id=eos_token_id, length_penalty=length_penalty, early_stopping=early_stopping,
            num_return_sequences=num_return_sequences, stops=stops, padding=padding,
        )  # fmt: skip
    return _loop(out, T, next_logits, process, pick, eos_token_id, pad_token_id, stops, padding)


@torch.inference_mode()
def _loop(out, T, next_logits, process, pick, eos_token_id, pad_token_id, stops, padding):
    finished = torch.zeros(out.size(0), dtype=torch.bool, device=out.device)
    can_finish = eos_token_id is not None or stops  # else no row ends early, and nothing is checked
    for i in range(T, out.size(1)):
        logits = next_logits(out[:, :i])  # [B, V]: the scores for the token at position i
        scores = process(out[:, :i], logits.float()) if process else logits
        tokens, scores = pick(scores)  # [B], and the scores it was picked from
        if can_finish and pad_token_id is not None:
            tokens = torch.where(finished, pad_token_id, tokens)
        out[:, i] = tokens
        logprobs = scores.float().log_softmax(dim=-1).gather(1, tokens[:, None])[:, 0]
        if eos_token_id is not None:
            finished |= tokens == eos_token_id
        if stops:
            finished |= stopping.any_met(stops, out[:, : i + 1], padding)
        yield Step(tokens, logits, scores, logprobs, out[:, : i + 1], finished)
        if can_finish and bool(finished.all()):
            return out[:, : i + 1], None
    return out, None


def _greedy(scores):
    return scores.argmax(dim=-1), scores


def _scorer(model, mask, cache) -> Callable[[torch.Tensor], torch.Tensor]:
    """sequences [R, t] -> the next-token logits [R, V] after them, from the model's forward pass.

    With a cache, only what it has not seen yet goes in: the prompt first, then one token a step.
    Without one, the whole sequence goes in every step.
    """

    def next_logits(sequences):
        context = sequences[:, cache.length :] if cache is not None else sequences
        return model(context, cache, attention_mask=None if mask is None else mask[:, : sequences.size(1)])[:, -1]

    return next_logits


def _compiled_scorer(model, T, mask, cache) -> Callable[[torch.Tensor], torch.Tensor]:
    """As _scorer, but every token after the prompt goes through the compiled model.decode_step."""
    prompt = _scorer(model, mask, cache)
    step = model.compiled_decode_step()
    rows = cache.keys.size(1)
    visible = torch.zeros(rows, cache.max_len, dtype=torch.bool, device=cache.keys.device)  # [R, max_len]
    visible[:, :T] = True if mask is None else mask[:, :T].bool()
    # The cache is written inside the compiled step: CUDA graphs may only do that to a tensor that stays put.
    torch._dynamo.mark_static_address(cache.keys)
    torch._dynamo.mark_static_address(cache.values)

    def next_logits(sequences):
        i = sequences.size(1)
        if i == T:
            return prompt(sequences)  # the prompt, in one ordinary forward pass that fills the cache
        visible[:, i - 1] = True
        logits = step(sequences[:, i - 1 : i], cache, torch.tensor([i - 1], device=sequences.device), visible)
        cache.length = i
        return logits

    return next_logits


def _refuse_sampling_options(**given) -> None:
    for name, value in given.items():
        if value is not None:
            raise ValueError(
                f"{name} only applies when sampling: add do_sample=True (--do-sample); greedy is the default"
            )


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
