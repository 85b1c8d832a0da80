"""The MLP's nonlinearity, by the name config.json's "activation_function" gives it.

The names and formulas are those transformers accepts for GPT-2. GPT-2 itself uses "gelu_new",
the tanh approximation of GELU; "gelu_pytorch_tanh", "gelu_fast" and "gelu_accurate" are the
same function written differently, so they share torch's kernel for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


NONLINEARITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "gelu": F.gelu,  # exact, with erf
    "gelu_python": F.gelu,
    "gelu_10": lambda x: F.gelu(x).clamp(-10, 10),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),
    "relu6": F.relu6,
    "leaky_relu": F.leaky_relu,
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "hardswish": F.hardswish,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "linear": lambda x: x,
    "laplace": lambda x: 0.5 * (1.0 + torch.erf((x - 0.707107) / (0.282095 * math.sqrt(2.0)))),
    "sqrtsoftplus": lambda x: F.softplus(x).sqrt(),
}

# transformers also accepts these, but they carry learned parameters that GPT-2's MLP has no place for.
LEARNED = ("prelu", "xielu")
