"""transformers, the reference: its GPT-2 and tokenizer on the same resolved checkpoint, and its greedy
loop. Imported only by the parity tools and the tests, never by the rest of minigpt2 (pip install
"minigpt2[parity]")."""

from __future__ import annotations

import torch

from ..checkpoint import Checkpoint

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


def reference_model(checkpoint: Checkpoint, dtype=None, device="cpu") -> transformers.GPT2LMHeadModel:
    source, revision = _source(checkpoint)
    model = transformers.GPT2LMHeadModel.from_pretrained(source, revision=revision, dtype=dtype)
    return model.to(device).eval()


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
