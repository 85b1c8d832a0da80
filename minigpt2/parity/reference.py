"""transformers, the reference: its GPT-2 and tokenizer on the same resolved checkpoint, and its greedy
loop. Imported only by the parity tools and the tests, never by the rest of minigpt2 (pip install
"minigpt2[parity]")."""

from __future__ import annotations

import dataclasses

import torch

from ..checkpoint import WEIGHT_FILES, Checkpoint
from ..loading.weights import PROJECTIONS

try:
    import transformers
    from transformers.utils import logging as transformers_logging
except ImportError:
    raise ImportError('comparing with transformers needs it: pip install "minigpt2[parity]"') from None

transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()


def _source(checkpoint: Checkpoint) -> tuple[str, str | None]:
    """Where transformers reads the same files: the hub repo at the very commit, or the folder."""
    return (checkpoint.repo, checkpoint.commit) if checkpoint.repo else (str(checkpoint.folder), None)


def reference_model(checkpoint: Checkpoint, dtype=None, device="cpu", ours=None) -> transformers.GPT2LMHeadModel:
    """transformers' model on the same files: the folder (or hub snapshot) itself; a LoRA adapter as peft's
    PeftModel over its base; a weights file transformers cannot find or read (any other name, nanoGPT's,
    llm.c's) as transformers' model holding the weights that minigpt2 read (`ours`)."""
    source, revision = _source(checkpoint)
    if checkpoint.adapter is not None:
        base = transformers.GPT2LMHeadModel.from_pretrained(source, revision=revision, dtype=dtype)
        model = _peft_model(base, checkpoint)
    elif _reads_the_folder(checkpoint) or ours is None:
        model = transformers.GPT2LMHeadModel.from_pretrained(source, revision=revision, dtype=dtype)
    else:
        model = holding(ours)
    return model.to(device).eval()


def _reads_the_folder(checkpoint: Checkpoint) -> bool:
    """Whether transformers, given the folder, reads the very weights file that minigpt2 read."""
    found = checkpoint.weights_file
    chosen = next((name for name in WEIGHT_FILES if name in checkpoint.files), None)
    return found is None or (found.parent == checkpoint.folder and found.name == chosen)


def _peft_model(base, checkpoint: Checkpoint):
    try:
        from peft import PeftModel
    except ImportError:
        raise ImportError("comparing a LoRA adapter with transformers needs peft: pip install peft") from None
    return PeftModel.from_pretrained(base, str(checkpoint.adapter))


def holding(ours) -> transformers.GPT2LMHeadModel:
    """transformers' GPT2LMHeadModel with minigpt2's config and weights (projections back to Conv1D's [in, out])."""
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**dataclasses.asdict(ours.config)))
    state = {
        (name if name.startswith("lm_head.") else "transformer." + name): t.t() if name.endswith(PROJECTIONS) else t
        for name, t in ours.state_dict().items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # a tied head is wte
    model.tie_weights()
    return model.to(ours.wte.weight.dtype)


def reference_tokenizer(checkpoint: Checkpoint, byte_level: bool):
    """transformers' GPT-2 tokenizer for GPT-2's byte-level BPE, its generic one for any other
    tokenizer.json (as the Korean GPT-2's model card loads it)."""
    source, revision = _source(checkpoint)
    kind = transformers.AutoTokenizer if byte_level else transformers.PreTrainedTokenizerFast
    return kind.from_pretrained(source, revision=revision)


@torch.inference_mode()
def reference_greedy(model, input_ids: torch.Tensor, new_tokens: int, **options) -> torch.Tensor:
    """transformers' greedy generate, made to add exactly new_tokens (no stop at eos)."""
    return model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
        **options,
    )


@torch.no_grad()
def guide_perplexity(model, ids: list[int], context: int, stride: int) -> tuple[float, int]:
    """The sliding window of transformers' perplexity guide, on any model(ids, labels=...).loss: windows of
    up to `context` tokens starting every `stride`, each scoring only the tokens past the previous window's
    end (the rest labelled -100), each window's mean loss weighted by the tokens it scored after the shift.
    Returns (nll_sum, tokens scored), the guide's own sums."""
    row = torch.tensor([ids])
    nll_sum, scored, scored_up_to = 0.0, 0, 0
    for begin in range(0, row.size(1), stride):
        end = min(begin + context, row.size(1))
        window = row[:, begin:end]
        labels = window.clone()
        labels[:, : -(end - scored_up_to)] = -100  # already scored by an earlier window
        counted = int((labels != -100).sum()) - 1  # the loss shifts labels by one: the first is never scored
        nll_sum += model(window, labels=labels).loss.double().item() * counted
        scored, scored_up_to = scored + counted, end
        if end == row.size(1):
            break
    return nll_sum, scored
