"""model.generate and model.stream: the generation wing's front doors on the model (the loop is loop.py)."""

from . import loop


class GenerationMixin:
    generate = loop.generate  # model.generate(input_ids, max_new_tokens=20, ...) -> sequences
    stream = loop.stream  # for step in model.stream(input_ids, ...): one Step per new token
