"""The generation loop: score the next token, process the scores, pick one, append it, repeat.

With a KV cache the prompt is run once and every later step feeds only the newest token;
without one (use_cache=False) every step feeds the whole sequence again, as the classic
tutorial loop does. Both pick the same tokens.

Picking is greedy (argmax) unless do_sample=True, which draws from the softmax of the scores
after temperature, top-k and top-p; num_beams > 1 runs beam search (beam.py). Before picking,
the scores go through the processors asked for (processors.py). The options keep the names and
meanings of transformers' generate(); config.py holds them all, with their defaults and checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..cache import KVCache
from ..hooks import check_names, during_generation
from . import beam, compiled, processors, stopping
from .assisted import LookupDraft, ModelDraft, assisted_loop
from .config import DEFAULT_NEW_TOKENS, GenerationConfig
from .steps import GenerateOutput, Step


def generate(
    model,
    input_ids: torch.Tensor | None = None,
    max_new_tokens: int | None = None,
    *,
    output_scores=False,
    **kwargs,
):
    """Continue input_ids [B, T] -> [B * num_return_sequences, T + n]; arguments as for stream().

    n is max_new_tokens (or max_length - T), or fewer when every row has finished.
    output_scores=True: a GenerateOutput instead, with every step's processed scores.
    """
    scores, logprobs = [], []

    def keep(step):
        scores.append(step.scores)
        logprobs.append(step.logprobs)

    steps = stream(model, input_ids, max_new_tokens, **kwargs)
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
    input_ids: torch.Tensor | None = None,
    max_new_tokens: int | None = None,
    *,
    config: GenerationConfig | None = None,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    tokenizer=None,
    hooks: dict[str, Callable] | None = None,
    assistant_model=None,
    **options,
) -> Iterator[Step]:
    """The loop, one Step per new token: `for step in model.stream(ids, max_new_tokens=20): ...`.

    options: GenerationConfig's fields (max_new_tokens, eos_token_id, do_sample, num_beams, ...), over
        `config` when one is given, else over the model's generation defaults (the checkpoint's
        generation_config.json, or its config.json's eos), as transformers' generate() takes them. With no
        length anywhere, 20 new tokens (transformers' default). Every one is checked before the first
        forward pass.
    input_ids [B, T]: the prompts; None starts one row from the bos token, as transformers does.
    attention_mask [B, T]: 1 for real tokens, 0 for left padding (Tokenizer.encode_batch makes both).
    generator: a torch.Generator for the draws (or seed=); tokenizer: to read stop_strings.
    hooks: {name: fn} run at every forward pass, the prompt's and each new token's, as model(ids, hooks=...)
        runs them; fn(x, hook) can tell the generated tokens by hook.new_from (minigpt2/hooks.py). Cached
        and uncached generation give the same tokens with the same hooks.
    assistant_model: a smaller GPT-2 with the same vocabulary that drafts tokens for the model to check
        (assisted decoding, generation/assisted.py; so does prompt_lookup_num_tokens=n, with no model).
    The generator returns (sequences, sequences_scores) when it ends; generate() is this loop run to its end.
    """
    started = time.monotonic()
    if max_new_tokens is not None:
        options["max_new_tokens"] = max_new_tokens
    if config is not None:
        config = config.replace(**options)
    else:
        config = GenerationConfig.build(model.generation_defaults, **options)
    if input_ids is None:
        if config.bos_token_id is None:
            raise ValueError(
                "with no input_ids, generation starts from the bos token, and none is set: give bos_token_id"
            )
        input_ids = torch.tensor([[config.bos_token_id]])
    assisted = assistant_model is not None or config.prompt_lookup_num_tokens is not None
    run = Run.start(model, input_ids, attention_mask, config, tokenizer, started, None if assisted else hooks)
    sampler = processors.Sampler(config, generator, run.out.device) if config.do_sample else None
    if assisted:
        draft = _draft(model, run, assistant_model, sampler)
        return assisted_loop(model, run, draft, sampler, hooks)
    if config.beams:
        return beam.search(run)
    return _loop(run, sampler or _greedy)


def _draft(model, run: Run, assistant, sampler):
    """The drafter of an assisted generation, once its request is checked."""
    config = run.config
    if run.out.size(0) != 1 or config.beams:
        raise ValueError(
            "assisted decoding runs one row, as in transformers: one prompt, no num_return_sequences, no num_beams"
        )
    if config.compile or not config.use_cache:
        raise ValueError("assisted decoding checks drafts through the KV cache: drop compile=True and use_cache=False")
    if assistant is None:
        return LookupDraft(config)
    if assistant.config.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"the assistant's vocabulary ({assistant.config.vocab_size} tokens) is not the model's "
            f"({model.config.vocab_size}): it must share the model's tokenizer"
        )
    if run.out.size(1) > assistant.config.n_positions:
        raise ValueError(f"the assistant's context ({assistant.config.n_positions}) is shorter than the generation")
    return ModelDraft(assistant.eval(), config, run.out.size(1), run.process, sampler)


@dataclass
class Run:
    """A generation, set up and checked: what the loops (greedy and sampling here, beams in beam.py) run on.
    R rows: each prompt num_return_sequences (or num_beams) times."""

    config: GenerationConfig
    out: torch.Tensor  # [R, total]: the prompts, then the fill value (pad) to the end
    prompt_length: int
    padding: torch.Tensor  # [R]: each row's left padding
    next_logits: Callable[[torch.Tensor], torch.Tensor]  # sequences [R, t] -> next-token logits [R, V]
    process: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None  # the processors, or None
    stops: list[stopping.Criterion]
    cache: KVCache | None

    @classmethod
    def start(cls, model, input_ids, attention_mask, config: GenerationConfig, tokenizer, started, hooks=None) -> Run:
        vocab_size, context = model.config.vocab_size, model.config.n_positions
        _check_ids(input_ids, vocab_size)
        B, T = input_ids.shape
        total = _total_length(T, config, context)
        if total > context:
            raise ValueError(
                f"prompt ({T} tokens) + new tokens ({total - T}) = {total} is longer than the model's context "
                f"({context}); ask for fewer new tokens or shorten the prompt"
            )
        for name in ("eos_token_id", "pad_token_id", "forced_eos_token_id"):
            for token in _as_ids(getattr(config, name)):
                _check_in_vocabulary(name, token, vocab_size)
        padded = _check_attention_mask(attention_mask, B, T)
        k = config.num_beams if config.beams else config.num_return_sequences  # rows per prompt
        if config.stop_strings is not None and config.pad_id is None and B * k > 1:
            raise ValueError(
                "stop_strings with several rows needs pad_token_id (or eos_token_id) for rows that stop early"
            )
        stops = stopping.criteria(config, tokenizer, started)
        if hooks and config.compile:
            raise ValueError("hooks run in the eager forward pass; drop compile=True to generate with them")
        if hooks:
            check_names(model.hook_names(), hooks)
            hooks = during_generation(hooks, T)
        device = model.wte.weight.device
        padding = (T - attention_mask.sum(dim=1)) if padded else torch.zeros(B, dtype=torch.long)  # [B]
        padding = padding.repeat_interleave(k).to(device)  # [B * k]
        chain = processors.processors(
            config, vocab_size=vocab_size, prompt_length=T, total_length=total, padding=padding
        )
        out = torch.full((B * k, total), config.pad_id if config.pad_id is not None else 0, device=device)
        out[:, :T] = input_ids.to(device).repeat_interleave(k, dim=0)
        mask = None  # only needed when there is padding: the fast path stays mask-free
        if padded:
            mask = torch.ones(B * k, total, dtype=torch.long, device=device)
            mask[:, :T] = attention_mask.to(device).repeat_interleave(k, dim=0)
        # compile=True: the cache spans the context, so that the compiled step's shapes never change
        cache = model.new_cache(B * k, None if config.compile else total) if config.use_cache else None
        next_logits = next_logits_fn(model, mask, cache, hooks)
        if config.compile:
            next_logits = compiled.next_logits_fn(model, T, mask, cache, prefill=next_logits)
        process = (lambda seqs, scores: processors.apply(chain, seqs, scores)) if chain else None
        return cls(config, out, T, padding, next_logits, process, stops, cache)


@torch.inference_mode()
def _loop(run: Run, pick):
    """Greedy or sampling: a Step per new token; returns (sequences, None)."""
    out, eos, pad = run.out, torch.tensor(run.config.eos_ids, device=run.out.device), run.config.pad_id
    finished = torch.zeros(out.size(0), dtype=torch.bool, device=out.device)
    can_finish = eos.numel() > 0 or run.stops  # else no row ends early, and nothing is checked
    for i in range(run.prompt_length, out.size(1)):
        logits = run.next_logits(out[:, :i])  # [R, V]: the scores for the token at position i
        scores = run.process(out[:, :i], logits.float()) if run.process else logits
        tokens, scores = pick(scores)  # [R], and the scores it was picked from
        if can_finish and pad is not None:
            tokens = torch.where(finished, pad, tokens)
        out[:, i] = tokens
        logprobs = scores.float().log_softmax(dim=-1).gather(1, tokens[:, None])[:, 0]
        if eos.numel():
            finished |= torch.isin(tokens, eos)
        if run.stops:
            finished |= stopping.any_met(run.stops, out[:, : i + 1], run.padding)
        yield Step(tokens, logits, scores, logprobs, out[:, : i + 1], finished)
        if can_finish and bool(finished.all()):
            return out[:, : i + 1], None
    return out, None


def _greedy(scores):
    return scores.argmax(dim=-1), scores


def next_logits_fn(model, mask, cache: KVCache | None, hooks=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """sequences [R, t] -> the next-token logits [R, V] after them, from the model's forward pass.

    With a cache, only what it has not seen yet goes in: the prefill (the prompt, once), then a decode
    step of one token. Without one, the whole sequence goes in every step.
    """

    def next_logits(sequences):
        context = sequences[:, cache.length :] if cache is not None else sequences
        step_mask = None if mask is None else mask[:, : sequences.size(1)]
        return model(context, cache, attention_mask=step_mask, hooks=hooks)[:, -1]

    return next_logits


def _check_ids(input_ids, vocab_size: int) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise ValueError("input_ids must be a LongTensor of shape [batch, tokens], e.g. torch.tensor([ids])")
    if input_ids.size(1) == 0:
        raise ValueError("the prompt is empty; start from at least one token (GPT-2 uses its eos token as a start)")
    _check_in_vocabulary("token id", int(input_ids.min()), vocab_size)
    _check_in_vocabulary("token id", int(input_ids.max()), vocab_size)


def _as_ids(value) -> tuple[int, ...]:
    return () if value is None else value if isinstance(value, tuple) else (value,)


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


def _total_length(prompt_len: int, config: GenerationConfig, context: int) -> int:
    """Total sequence length after generation: max_new_tokens or max_length, else 20 new tokens within the context."""
    if config.max_new_tokens is None and config.max_length is None:
        if prompt_len >= context:
            raise ValueError(f"the prompt ({prompt_len} tokens) fills the model's context ({context}); shorten it")
        return min(prompt_len + DEFAULT_NEW_TOKENS, context)
    if config.max_new_tokens is not None:
        return prompt_len + config.max_new_tokens
    if config.max_length < prompt_len:
        raise ValueError(f"max_length ({config.max_length}) is shorter than the prompt ({prompt_len} tokens)")
    return config.max_length
