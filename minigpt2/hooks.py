"""The named activation points of a forward pass, as TransformerLens names them, and the dispatcher that
runs a caller's functions at them. minigpt2/interp/internals.py documents every name with its shape.

A hook is fn(x), or fn(x, hook) as TransformerLens writes them: the second argument, a HookPoint,
says which point and which tokens the call covers, so that a hook can tell the prompt from the
tokens a generation adds (hook.new_from) in a cached step as in a whole-sequence pass.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HookPoint:
    """Where a hook runs: the point's name, and the tokens of this call (x covers positions start ..
    start + tokens - 1 along its token dimension; those before start are in the KV cache)."""

    name: str
    start: int = 0
    tokens: int = 0
    prompt_length: int | None = None  # while generating: the prompt's length (positions below it are the prompt)

    @property
    def positions(self) -> range:
        return range(self.start, self.start + self.tokens)

    @property
    def new_from(self) -> int:
        """Where this call's generated tokens begin along its tokens: x[:, hook.new_from:] are the tokens the
        generation added (all of them in a cached step, none in the prompt's pass or outside generate())."""
        if self.prompt_length is None:
            return self.tokens
        return min(self.tokens, max(0, self.prompt_length - self.start))


def takes_point(fn: Callable) -> bool:
    """Whether a hook is written fn(x, hook): two arguments it must be given (or *args)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: one argument
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty]
    return len(required) >= 2 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def with_point(fn: Callable) -> Callable[[torch.Tensor, HookPoint], torch.Tensor | None]:
    """A hook as a function of (x, hook), whichever way it is written."""
    return fn if takes_point(fn) else lambda x, point: fn(x)


def during_generation(hooks: dict[str, Callable], prompt_length: int) -> dict[str, Callable]:
    """The hooks of a generation: each learns the prompt's length from its HookPoint."""

    def with_prompt(fn):
        return lambda x, point: fn(x, dataclasses.replace(point, prompt_length=prompt_length))

    return {name: with_prompt(with_point(fn)) for name, fn in hooks.items()}


class Hook:
    """hook(name, x) passes x through hooks[name] when there is one: the function may record x, or return
    a tensor to use instead (an intervention). With no hooks it returns x and costs a dict lookup.
    start, tokens: the positions of the call, for hooks that take a HookPoint."""

    def __init__(self, hooks: dict[str, Callable] | None = None, *, start: int = 0, tokens: int = 0):
        self.hooks = {name: with_point(fn) for name, fn in (hooks or {}).items()}
        self.start, self.tokens = start, tokens

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        fn = self.hooks.get(name)
        if fn is None:
            return x
        replaced = fn(x, HookPoint(name, self.start, self.tokens))
        return x if replaced is None else replaced

    def wants(self, *names: str) -> bool:
        return any(name in self.hooks for name in names)


class Recorder(Hook):
    """A Hook that wants every point and keeps the name of each one the forward pass reaches, in order: how
    the model lists its points (GPT2.hook_names), so that each name is spelled once, where it is used."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        self.names.append(name)
        return x

    def wants(self, *names: str) -> bool:
        return True


def check_names(all_names: list[str], names: Iterable[str]) -> None:
    """A misspelt name would silently capture or change nothing: refuse it."""
    unknown = sorted(set(names) - set(all_names))
    if unknown:
        raise ValueError(
            f"no activation named {unknown[0]!r}; names look like 'blocks.0.hook_resid_pre' (see model.hook_names())"
        )
