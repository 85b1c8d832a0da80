"""model(ids, labels=): the loss beside the logits, checked against GPT2LMHeadModel(ids, labels=).loss on the
same checkpoint (-100 labels, right- and left-padded batches, bf16 weights). Every comparison prints the
difference it saw."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scoring_cases import LOSS_TOLERANCE, padded, positions, reference_logprobs

from minigpt2 import GPT2


def test_loss_matches_transformers_with_ignored_labels(tiny, reference, rows):
    model, _ = tiny
    ids = torch.tensor([rows[0][:40], rows[2][:40]])
    labels = ids.clone()
    labels[0, :7] = -100  # a prompt not scored
    labels[1, torch.randperm(40, generator=torch.Generator().manual_seed(0))[:15]] = -100  # scattered
    out = model(ids, labels=labels)
    with torch.no_grad():
        expected = reference(ids, labels=labels)
    diff = (out.loss - expected.loss).abs().item()
    print(f"loss {out.loss.item():.6f} vs transformers {expected.loss.item():.6f}: diff {diff:.2e}")
    assert out.loss.dtype == torch.float32 and out.loss.shape == ()
    assert diff < LOSS_TOLERANCE
    loss, logits = out  # transformers' order
    assert torch.equal(logits, model(ids))  # the logits beside the loss are the plain call's
    assert isinstance(model(ids), torch.Tensor)  # model(ids) is still the logits: logits[0, -1] works
    unshifted = F.cross_entropy(logits[0].float(), ids[0])  # a loss that forgot the shift is far off
    assert (unshifted - loss).abs() > 100 * LOSS_TOLERANCE


def test_loss_right_padded_batch_matches_transformers(tiny, reference, rows):
    model, tokenizer = tiny
    ids, mask = padded(rows, "right", tokenizer.eos_token_id)
    labels = ids.masked_fill(mask == 0, -100)
    loss = model(ids, attention_mask=mask, labels=labels).loss
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, labels=labels).loss
    # the same mean, from the rows one at a time: each counted token once, padding never
    nll = torch.cat([-reference_logprobs(reference, torch.tensor([row]))[0] for row in rows])
    diff, diff_rows = (loss - expected).abs().item(), (loss - nll.mean()).abs().item()
    print(f"right-padded loss {loss.item():.6f}: diff to transformers {diff:.2e}, to the rows alone {diff_rows:.2e}")
    assert diff < LOSS_TOLERANCE and diff_rows < LOSS_TOLERANCE


def test_loss_left_padded_batch_equals_the_rows_alone(tiny, reference, rows):
    """Left padding: minigpt2 takes positions from the mask; transformers needs position_ids for that. A row's
    first real token follows padding, nothing real: its label is -100 too, as an unpadded row's first token
    is never predicted (labels that count it count a prediction made from padding, in both models)."""
    model, tokenizer = tiny
    ids, mask = padded(rows, "left", tokenizer.eos_token_id)
    after_real = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)  # the token before is real
    labels = ids.masked_fill((mask * after_real) == 0, -100)
    loss = model(ids, attention_mask=mask, labels=labels).loss
    nll = torch.cat([-reference_logprobs(reference, torch.tensor([row]))[0] for row in rows])
    with torch.no_grad():
        with_positions = reference(ids, attention_mask=mask, position_ids=positions(mask), labels=labels).loss
        without = reference(ids, attention_mask=mask, labels=labels).loss
    naive = model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    diff_rows, diff_ref = (loss - nll.mean()).abs().item(), (loss - with_positions).abs().item()
    print(
        f"left-padded loss {loss.item():.6f}: diff to the rows alone {diff_rows:.2e}, to transformers with "
        f"position_ids {diff_ref:.2e}; transformers without position_ids is off by {(loss - without).abs().item():.2e}; "
        f"labels counting the first real token are off by {(naive - nll.mean()).abs().item():.2e}"
    )
    assert diff_rows < LOSS_TOLERANCE and diff_ref < LOSS_TOLERANCE


def test_loss_of_bf16_weights_is_fp32(tiny_checkpoint, tiny, rows):
    model, _ = tiny
    bf16 = GPT2.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    ids = torch.tensor([rows[0][:40]])
    with torch.no_grad():
        out = bf16(ids, labels=ids)
        fp32 = model(ids, labels=ids).loss
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    in_fp32 = F.cross_entropy(out.logits[0, :-1].float(), ids[0, 1:])  # upcast first, as transformers' loss does
    in_bf16 = F.cross_entropy(out.logits[0, :-1], ids[0, 1:]).float()  # what skipping the upcast would give
    diff, to_fp32 = (out.loss - in_fp32).abs().item(), (out.loss - fp32).abs().item()
    print(
        f"bf16 weights: loss {out.loss.item():.6f}, diff to the fp32 cross-entropy of its logits {diff:.2e}, "
        f"to the fp32 model's {to_fp32:.2e}, bf16 cross-entropy off by {(out.loss - in_bf16).abs().item():.2e}"
    )
    assert diff < LOSS_TOLERANCE
    assert to_fp32 < 0.02 * fp32.item()  # bf16 weights round, but the loss is the same loss


def test_labels_of_another_shape_are_refused(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="labels must have input_ids' shape"):
        model(torch.zeros(1, 5, dtype=torch.long), labels=torch.zeros(1, 4, dtype=torch.long))


# ---- score: each token's log-probability ----
