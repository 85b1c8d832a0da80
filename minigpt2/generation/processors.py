"""What happens to the next-token scores before a token is picked, in transformers' order and meaning.

The processors (repetition_penalty, no_repeat_ngram_size, bad_words_ids, min_length, min_new_tokens,
forced_eos_token_id) see every token so far, prompt and padding included, as transformers' do. Greedy
and sampling apply them to the fp32 logits, beam search to their log-softmax. Sampling then applies
the warpers: temperature, top-k, top-p.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

DEFAULT_TOP_K = 50  # transformers' default when sampling; top_k=0 turns it off

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (sequences [B, t], scores [B, V]) -> scores


def processors(
    *,
    vocab_size: int,
    prompt_length: int,
    total_length: int,
    padding: torch.Tensor,
    eos_token_id: int | None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    bad_words_ids: list[list[int]] | None = None,
    min_length: int | None = None,
    min_new_tokens: int | None = None,
    forced_eos_token_id: int | None = None,
) -> list[Processor]:
    """The processors asked for, checked, in the order transformers applies them.
    padding [R]: each row's left padding, which the repetition penalty leaves alone (as transformers does)."""
    chain = []
    if repetition_penalty is not None and repetition_penalty != 1.0:
        if not repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be above 0 (1 is none), got {repetition_penalty}")
        chain.append(lambda seqs, scores: _penalize_repetition(seqs, scores, repetition_penalty, padding))
    if no_repeat_ngram_size is not None and no_repeat_ngram_size != 0:
        if not no_repeat_ngram_size > 0:
            raise ValueError(f"no_repeat_ngram_size must be 1 or more, got {no_repeat_ngram_size}")
        chain.append(lambda seqs, scores: _ban_repeated_ngrams(seqs, scores, no_repeat_ngram_size))
    if bad_words_ids is not None:
        chain.append(_bad_words(bad_words_ids, eos_token_id, vocab_size))
    for name, value, length in (
        ("min_length", min_length, lambda seqs: seqs.size(1)),
        ("min_new_tokens", min_new_tokens, lambda seqs: seqs.size(1) - prompt_length),
    ):
        if value:
            if eos_token_id is None:
                raise ValueError(f"{name} holds the eos token back, so it needs eos_token_id")
            chain.append(_hold_back_eos(value, length, eos_token_id))
    if forced_eos_token_id is not None:
        if not 0 <= forced_eos_token_id < vocab_size:
            raise ValueError(
                f"forced_eos_token_id {forced_eos_token_id} is outside the vocabulary (0..{vocab_size - 1})"
            )
        chain.append(_force_eos_last(total_length, forced_eos_token_id))
    return chain


def apply(chain: list[Processor], sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    for process in chain:
        scores = process(sequences, scores)
    return scores


def _penalize_repetition(sequences, scores, penalty: float, padding: torch.Tensor):
    """Every token already in the row: its score divided by the penalty, or multiplied when negative.
    Padding is sent to a spare column past the vocabulary, so it penalizes nothing."""
    V = scores.size(1)
    in_padding = torch.arange(sequences.size(1), device=sequences.device) < padding.to(sequences.device)[:, None]
    sequences = sequences.masked_fill(in_padding, V)
    scores = torch.nn.functional.pad(scores, (0, 1))
    seen = scores.gather(1, sequences)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, sequences, seen)[:, :V]


def _ban_repeated_ngrams(sequences, scores, n: int):
    """No n-gram twice: a token that would complete an n-gram already in the row gets -inf."""
    if sequences.size(1) < n:
        return scores
    last = sequences[:, sequences.size(1) + 1 - n :]  # [B, n-1]: the n-gram the next token would complete
    windows = sequences.unfold(1, n, 1)  # [B, windows, n]: every n-gram so far
    completes = (windows[..., :-1] == last[:, None]).all(dim=-1)  # [B, windows]
    banned = torch.zeros(scores.shape[0], scores.shape[1] + 1, dtype=torch.bool, device=scores.device)
    banned.scatter_(
        1, torch.where(completes, windows[..., -1], scores.size(1)), True
    )  # the spare column absorbs misses
    return scores.masked_fill(banned[:, :-1], float("-inf"))


def _bad_words(bad_words_ids, eos_token_id, vocab_size) -> Processor:
    """A bad word's last token gets -inf where the row ends in the rest of it (always, for one-token words)."""
    if (
        not isinstance(bad_words_ids, (list, tuple))
        or not bad_words_ids
        or not all(isinstance(w, (list, tuple)) and w for w in bad_words_ids)
    ):
        raise ValueError(
            "bad_words_ids must be a non-empty list of non-empty lists of token ids, e.g. [[318], [40, 1101]]"
        )
    if not all(isinstance(t, int) and 0 <= t < vocab_size for w in bad_words_ids for t in w):
        raise ValueError(f"bad_words_ids holds ids outside the vocabulary (0..{vocab_size - 1})")
    words = [list(w) for w in bad_words_ids if list(w) != [eos_token_id]]  # as transformers: eos stays allowed
    always = [w[0] for w in words if len(w) == 1]
    after_prefix = [(torch.tensor(w[:-1]), w[-1]) for w in words if len(w) > 1]

    def ban(sequences, scores):
        banned = torch.zeros_like(scores, dtype=torch.bool)
        banned[:, always] = True
        for prefix, last in after_prefix:
            if len(prefix) <= sequences.size(1):
                banned[:, last] |= (sequences[:, -len(prefix) :] == prefix.to(sequences.device)).all(dim=-1)
        return scores.masked_fill(banned, float("-inf"))

    return ban


def _hold_back_eos(minimum: int, length: Callable[[torch.Tensor], int], eos_token_id: int) -> Processor:
    def hold(sequences, scores):
        if length(sequences) < minimum:
            scores = scores.clone()
            scores[:, eos_token_id] = float("-inf")
        return scores

    return hold


def _force_eos_last(total_length: int, eos_token_id: int) -> Processor:
    def force(sequences, scores):
        if sequences.size(1) == total_length - 1:
            scores = torch.full_like(scores, float("-inf"))
            scores[:, eos_token_id] = 0
        return scores

    return force


def warp(scores: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0) -> torch.Tensor:
    """Scores [B, V] divided by temperature, with all but the top_k highest, then all outside the
    smallest set whose probability reaches top_p (at least one token), set to -inf."""
    scores = scores.float() / temperature
    if top_k:
        kth_best = scores.topk(min(top_k, scores.size(-1))).values[..., -1:]
        scores = scores.masked_fill(scores < kth_best, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop = mass_before >= top_p  # the top token has 0 before it, so it always stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def sampler(temperature, top_k, top_p, seed, generator, device):
    """A picker: processed scores [B, V] -> (drawn tokens [B], the warped scores they were drawn from)."""
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

    def sample(scores):
        warped = warp(scores, temperature, top_k, top_p)
        return torch.multinomial(warped.softmax(dim=-1), 1, generator=generator)[:, 0], warped

    return sample
