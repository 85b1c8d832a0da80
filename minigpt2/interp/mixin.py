"""model.run_with_cache, model.attention_patterns and model.logit_lens: the interpretability wing's front
doors on the model (internals.py)."""

from . import internals


class InterpretabilityMixin:
    run_with_cache = internals.run_with_cache  # logits and the named activations asked for
    attention_patterns = internals.attention_patterns  # [n_layer, B, H, query, key]
    logit_lens = internals.logit_lens  # [n_layer, B, T, V]: next-token probabilities after each block
