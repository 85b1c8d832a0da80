"""What happens to the next-token scores before a token is picked, in transformers' order and meaning.

The processors (repetition_penalty, no_repeat_ngram_size, bad_words_ids, min_length, min_new_tokens,
forced_eos_token_id) see every token so far, prompt and padding included, as transformers' do. Greedy
and sampling apply them to the fp32 logits, beam search to their log-softmax. Sampling then applies
the warpers: temperature, top-k, top-p.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import GenerationConfig

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (sequences [B, t], scores [B, V]) -> scores


def processors(
    config: GenerationConfig, *, vocab_size: int, prompt_length: int, total_length: int, padding: torch.Tensor
) -> list[Processor]:
    """The processors the config asks for, in the order transformers applies them. padding [R]: each row's
    left padding, which the repetition penalty leaves alone (as transformers does)."""
    chain = []
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        penalty = config.repetition_penalty
        chain.append(lambda seqs, scores: _penalize_repetition(seqs, scores, penalty, padding))
    if config.no_repeat_ngram_size:
        chain.append(lambda seqs, scores: _ban_repeated_ngrams(seqs, scores, config.no_repeat_ngram_size))
    if config.bad_words_ids is not None:
        chain.append(_bad_words(config.bad_words_ids, config.eos_ids, vocab_size))
    if config.min_length:
        chain.append(_hold_back_eos(config.min_length, lambda seqs: seqs.size(1), config.eos_ids))
    if config.min_new_tokens:
        chain.append(_hold_back_eos(config.min_new_tokens, lambda seqs: seqs.size(1) - prompt_length, config.eos_ids))
    if config.forced_eos_token_id is not None:
        chain.append(_force_eos_last(total_length, config.forced_eos_token_id))
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


def _bad_words(bad_words_ids, eos_ids: tuple[int, ...], vocab_size: int) -> Processor:
    """A bad word's last token gets -inf where the row ends in the rest of it (always, for one-token words)."""
    if not all(0 <= t < vocab_size for w in bad_words_ids for t in w):
        raise ValueError(f"bad_words_ids holds ids outside the vocabulary (0..{vocab_size - 1})")
    words = [list(w) for w in bad_words_ids if not (len(w) == 1 and w[0] in eos_ids)]  # as transformers: eos stays
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


def _hold_back_eos(minimum: int, length: Callable[[torch.Tensor], int], eos_ids: tuple[int, ...]) -> Processor:
    def hold(sequences, scores):
        if length(sequences) < minimum:
            scores = scores.clone()
            scores[:, list(eos_ids)] = float("-inf")
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


class Sampler:
    """A picker that draws: processed scores [B, V] -> (drawn tokens [B], the warped scores they were drawn
    from), after the config's temperature, top-k and top-p."""

    def __init__(self, config: GenerationConfig, generator: torch.Generator | None, device):
        self.temperature, self.top_k, self.top_p = config.temperature, config.top_k, config.top_p
        if config.seed is not None and generator is not None:
            raise ValueError("give seed or generator, not both")
        self.generator = torch.Generator(device).manual_seed(config.seed) if config.seed is not None else generator

    def warp(self, scores: torch.Tensor) -> torch.Tensor:
        return warp(scores, self.temperature, self.top_k, self.top_p)

    def draw(self, probs: torch.Tensor) -> torch.Tensor:
        """One token per row [B] from probabilities [B, V]."""
        return torch.multinomial(probs, 1, generator=self.generator)[:, 0]

    def uniform(self) -> float:
        """A draw from U[0, 1), from the same generator (speculative sampling's acceptance test)."""
        return torch.rand((), generator=self.generator, device=self.generator.device if self.generator else None).item()

    def __call__(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        warped = self.warp(scores)
        return self.draw(warped.softmax(dim=-1)), warped
