"""Beam search: keep the num_beams best sequences of each prompt, token for token as transformers does.

Each step scores every continuation of every running beam (its summed log-probability so far plus
the new token's), keeps the 2 x num_beams best (so that num_beams remain when some end at eos),
and continues the num_beams best that have not ended. Those that end (eos, a stop string, the
length limit) join the prompt's finished sequences if they are among the num_beams best, scored by
their summed log-probability / (new tokens ** length_penalty). A prompt's search ends by
early_stopping's rule; what it returns is its best finished sequences.

The KV cache follows the beams in place: only rows whose beam changed are rewritten.
"""

from __future__ import annotations

import torch

from . import stopping
from .steps import Step

FAR_BELOW = -1.0e9  # the score that rules a candidate out, as transformers uses it


@torch.inference_mode()
def search(run):
    """run: a generation.Run whose rows are each prompt num_beams times (run.out [B * num_beams, total]).

    Yields a Step per new token; returns (sequences [B * num_return_sequences, T + n], their scores).
    """
    config, out, T, stops, cache = run.config, run.out, run.prompt_length, run.stops, run.cache
    num_beams, length_penalty, early_stopping = config.num_beams, config.length_penalty, config.early_stopping
    eos = torch.tensor(config.eos_ids, device=out.device)
    total = out.size(1)
    B = out.size(0) // num_beams
    keep = max(2, 1 + len(config.eos_ids)) * num_beams  # candidates kept each step
    among_best = torch.arange(keep, device=out.device) < num_beams  # [keep]: the first num_beams candidates
    running = out.view(B, num_beams, total).clone()  # [B, beams, total]
    running_scores = torch.zeros(B, num_beams, device=out.device)
    running_scores[:, 1:] = FAR_BELOW  # at first every beam is the prompt: only one may grow
    finished = running.clone()  # [B, beams, total]: each prompt's best finished sequences, best first
    finished_scores = torch.full((B, num_beams), FAR_BELOW, device=out.device)
    finished_lengths = torch.zeros(B, num_beams, dtype=torch.long, device=out.device)  # new tokens in each
    full = torch.zeros(B, num_beams, dtype=torch.bool, device=out.device)  # which finished slots hold one
    improvable = torch.ones(B, 1, dtype=torch.bool, device=out.device)  # can a running beam still do better?
    rows = torch.arange(B, device=out.device)[:, None]
    candidate_padding = run.padding.view(B, num_beams)[:, :1].expand(B, keep).reshape(-1)  # a prompt's beams share it

    for cur in range(T, total):
        sequences = running.view(B * num_beams, total)[:, :cur]
        logits = run.next_logits(sequences)  # [B * beams, V]
        V = logits.size(-1)
        log_probs = logits.float().log_softmax(dim=-1)
        if run.process is not None:
            log_probs = run.process(sequences, log_probs)
        summed = (log_probs.view(B, num_beams, V) + running_scores[:, :, None]).view(B, num_beams * V)
        candidate_scores, candidates = summed.topk(keep)  # [B, keep], best first
        parent = candidates // V  # [B, keep]: the beam each candidate continues
        candidate_sequences = running[rows, parent]  # [B, keep, total]
        candidate_sequences[:, :, cur] = candidates % V
        flat = candidate_sequences.view(B * keep, total)[:, : cur + 1]
        ends = torch.full((B * keep,), cur + 1 >= total, device=out.device)  # the length limit
        if eos.numel():
            ends |= torch.isin(flat[:, -1], eos)
        if stops:
            ends |= stopping.any_met(stops, flat, candidate_padding)
        ends = ends.view(B, keep)
        all_ended = bool(ends.all())  # the last step: nothing runs on

        # The num_beams best candidates that have not ended run on (on the last step, simply the best).
        alive_scores = candidate_scores + ends.to(torch.float32) * FAR_BELOW
        chosen = alive_scores.topk(num_beams).indices if not all_ended else among_best.nonzero()[:, 0].expand(B, -1)
        running = candidate_sequences[rows, chosen]
        running_scores = alive_scores.gather(1, chosen)
        parents = parent.gather(1, chosen)  # [B, beams]

        # Those that ended among the best num_beams join the finished ones, if they are good enough.
        just_ended = ends & among_best[None, :]
        ended_scores = candidate_scores / ((cur + 1 - T) ** length_penalty)
        prompt_full = full.all(dim=-1, keepdim=True) & (early_stopping is True)
        ended_scores += prompt_full.to(torch.float32) * FAR_BELOW
        ended_scores += (~improvable).to(torch.float32) * FAR_BELOW
        ended_scores += (~just_ended) * FAR_BELOW
        merged_scores = torch.cat((finished_scores, ended_scores), dim=1)
        best = merged_scores.topk(num_beams).indices  # [B, beams]
        finished = torch.cat((finished, candidate_sequences), dim=1)[rows, best]
        finished_scores = merged_scores.gather(1, best)
        lengths = torch.full((B, keep), cur + 1 - T, device=out.device)
        finished_lengths = torch.cat((finished_lengths, lengths), dim=1).gather(1, best)
        full = torch.cat((full, just_ended), dim=1).gather(1, best)

        flat_parents = (parents + rows * num_beams).view(-1)  # [B * beams]: rows of the last step
        if cache is not None:
            cache.reorder(flat_parents.tolist())
        tokens = running[:, :, cur].reshape(-1)
        yield Step(
            tokens=tokens,
            logits=logits,
            scores=log_probs,
            logprobs=log_probs[flat_parents, tokens],
            sequences=running.view(B * num_beams, total)[:, : cur + 1],
            finished=full.all(dim=-1).repeat_interleave(num_beams),
            beam_scores=candidate_scores.gather(1, chosen).reshape(-1),  # (alive_scores rule ended ones out)
            parents=flat_parents,
        )

        # Can the running beams still beat the finished ones? (transformers' heuristic, per early_stopping)
        length = (total if early_stopping == "never" and length_penalty > 0.0 else cur + 1) - T
        best_possible = running_scores[:, :1] / (length**length_penalty)
        worst_finished = torch.where(full, finished_scores.min(dim=1, keepdim=True).values, FAR_BELOW)
        improvable = improvable & (best_possible > worst_finished).any(dim=-1, keepdim=True)
        all_full = bool(full.all()) and early_stopping is True
        if not bool(improvable.any()) or all_full or all_ended:
            break

    n = config.num_return_sequences
    sequences = finished[:, :n].reshape(B * n, total)
    generated = int(finished_lengths[:, :n].max()) if total > T else 0
    return sequences[:, : T + generated], finished_scores[:, :n].reshape(-1)
