"""The module swaps a load option asks for, behind one small interface, so that the loader has one path
for all of them (as gpt-fast swaps modules): int8 weights (quantize.py), fast fp32 kernels (kernels.py),
and TransformerLens's weight processing (interp/processing.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..interp.processing import Processing, process_weights
from .kernel_choice import choose_kernels
from .kernels import FastLinear
from .quantize import SCHEMES, Int8Linear, quantize_rows

__all__ = ["SCHEMES", "ModuleSwap", "swap_linears", "swaps_for"]

# What the reader does with each tensor as it is read: name, tensor -> {name: tensor}, or None to keep it
Convert = Callable[[str, torch.Tensor], "dict[str, torch.Tensor] | None"]


class ModuleSwap:
    """prepare(model, device) runs on the meta model before any weight is read (swap modules there) and may
    return a Convert for the reader; finish(model) runs once the weights are attached and tied."""

    copies_weights = False  # True: the reader copies each weight to [out, in] in order, never a view of the file

    def prepare(self, model: nn.Module, device: torch.device) -> Convert | None:
        return None

    def finish(self, model: nn.Module) -> None:
        pass


def swaps_for(options) -> list[ModuleSwap]:
    """The swaps of a LoadOptions, in the order they apply."""
    swaps: list[ModuleSwap] = []
    if options.quantize == "int8":
        swaps.append(Int8Weights())
    elif options.fast and options.device.type == "cpu":
        swaps.append(FastKernels())
    if options.process:
        swaps.append(WeightProcessing(options.process if isinstance(options.process, Processing) else Processing()))
    return swaps


class Int8Weights(ModuleSwap):
    """Projections and LM head as Int8Linear, each weight quantized as it is read, so the fp32 model is never
    held whole; a head tied to the token embedding is quantized from the loaded wte."""

    def prepare(self, model, device):
        int8 = {name for name, _ in swap_linears(model, Int8Linear.like)}

        def convert(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor] | None:
            module = name.removesuffix(".weight")
            if module not in int8 or not name.endswith(".weight"):
                return None
            q, scales = quantize_rows(tensor)
            return {f"{module}.qweight": q.to(device), f"{module}.scales": scales.to(device)}

        return convert

    def finish(self, model):
        if model.config.tie_word_embeddings:
            model.lm_head.load_rows(model.wte.weight)


class FastKernels(ModuleSwap):
    """Projections copied to [out, in] and multiplied by the kernel this machine runs fastest for each shape
    and row count (kernels.py, kernel_choice.py)."""

    copies_weights = True

    def prepare(self, model, device):
        swap_linears(model, FastLinear.like)

    def finish(self, model):
        choose_kernels(model)


class WeightProcessing(ModuleSwap):
    def __init__(self, processing: Processing):
        self.processing = processing

    def finish(self, model):
        process_weights(model, self.processing)


def swap_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> list[tuple[str, nn.Module]]:
    """Put make(linear) in place of every nn.Linear of the model (the projections and the LM head), as
    gpt-fast swaps modules; returns (name, new module) for each."""
    swapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            parent, _, attribute = name.rpartition(".")
            replacement = make(module)
            setattr(model.get_submodule(parent), attribute, replacement)
            swapped.append((name, replacement))
    return swapped
