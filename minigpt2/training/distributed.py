"""More than one process: the training loop under torchrun, as DistributedDataParallel (gloo on the CPU, nccl
on CUDA) or, with fsdp, FSDP2's fully_shard. A process joins the group from torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); without it the run is one process, and every function here is
the identity or does nothing.

Every rank draws the whole batch of every micro-step, as one process does, and runs its own slice of the
rows (share()): the data position is the same on every rank, and N ranks train as one process with the same
--batch-size does, to float rounding.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.nn.parallel import DistributedDataParallel

from .data import IGNORE

# FSDP2 and torch.distributed.checkpoint are imported where a run shards: they take a second to import.


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group (once a process) and return this process's device: a bare cuda is the
    GPU of its LOCAL_RANK."""
    if not dist.is_initialized() and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"more than one process trains on cpu (gloo) or cuda (nccl), not {device}; give --device")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave)
    if dist.is_initialized() and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


def _leave() -> None:
    if dist.is_initialized():  # a caller may have left already
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0, or the one process; before joining the group, torchrun's RANK says."""
    return (dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))) == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block before the others, which then find what it wrote (the tokens' cache)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def check_batch_size(batch_size: int, processes: int | None = None) -> None:
    n = processes or size()
    if batch_size % n:
        raise ValueError(
            f"--batch-size {batch_size} (the rows of a micro-step, over all processes) does not split over {n} "
            f"processes; give a multiple of {n}, as {-(-batch_size // n) * n}"
        )


def share(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This rank's rows of a batch every rank drew whole, and the weight of its mean loss: the world size times
    its share of the batch's counted labels. The ranks' gradients are averaged, so the step follows the mean
    over the whole batch, as in one process, even where rows count different numbers of labels (instructions)."""
    n, r = size(), rank()
    if n == 1:
        return x, y, 1.0
    rows = slice(r * len(x) // n, (r + 1) * len(x) // n)
    return x[rows], y[rows], n * _counted(y[rows]) / _counted(y)


def _counted(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != IGNORE).sum())  # labels[0] is never predicted


def all_sum(*values: float) -> list[float]:
    """The values summed over the ranks (as they are, in one process)."""
    if not dist.is_initialized():
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(total)
    return total.tolist()


def mean(value: float) -> float:
    return all_sum(value)[0] / size()


def gather(value) -> list:
    """Every rank's value, in rank order."""
    if not dist.is_initialized():
        return [value]
    out = [None] * size()
    dist.all_gather_object(out, value)
    return out


def wrap(model: torch.nn.Module, device: torch.device, fsdp: bool) -> torch.nn.Module:
    """The model as the ranks run it: DDP's wrapper; with fsdp the model itself, each block and then the rest
    sharded in place over the ranks (FSDP2 moves a model built on the CPU to the device shard by shard); or
    the model itself in one process."""
    if fsdp:
        if not dist.is_initialized():
            raise ValueError(
                "--fsdp shards the model over the processes of torchrun; run it as torchrun --nproc_per_node N "
                "-m minigpt2 train ... --fsdp, or leave --fsdp out"
            )
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (size(),))  # not the default's: CUDA's even for a run on the CPU
        for block in model.h:
            fully_shard(block, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    if not dist.is_initialized():
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def gradient_sync(model: torch.nn.Module, last: bool):
    """Around a micro-step's forward and backward: the ranks' gradients are reduced on the step's last one
    only; before it each rank adds its own up (DDP's no_sync, FSDP2's set_requires_gradient_sync)."""
    if _sharded(model):
        model.set_requires_gradient_sync(last)
    if isinstance(model, DistributedDataParallel) and not last:
        return model.no_sync()
    return contextlib.nullcontext()


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """model.state_dict(), whole; FSDP2's shards gathered onto rank 0's CPU ({} on the others; every rank
    calls it). reshard() first, here and in optimizer_state(): after a forward without a backward (evaluate,
    sample) the root keeps its parameters whole, and the names would not lead to the optimizer's shards."""
    if not _sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    model.reshard()
    return get_model_state_dict(model, options=_whole())


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """optimizer.state_dict() as one process has it, keyed by the parameters' order: FSDP2's shards gathered
    onto rank 0 ({} on the others), so that a checkpoint resumes with any number of processes."""
    if not _sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model.reshard()
    whole = get_optimizer_state_dict(model, optimizer, options=_whole())  # keyed by the parameters' names
    index = {name: i for i, name in enumerate(_names(model, optimizer))}
    return _rekeyed(whole, index.__getitem__) if whole else {}


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    if not _sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    by_name = _rekeyed(state, _names(model, optimizer).__getitem__)
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def _sharded(model: torch.nn.Module) -> bool:
    fsdp = sys.modules.get("torch.distributed.fsdp")  # imported by wrap() once it shards a model
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def _whole():
    """Whole tensors, on rank 0's CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The optimizer's parameters' names, in the order optimizer.state_dict() numbers them."""
    name = {p: n for n, p in model.named_parameters()}
    return [name[p] for group in optimizer.param_groups for p in group["params"]]


def _rekeyed(state: dict, key) -> dict:
    groups = [{**group, "params": [key(p) for p in group["params"]]} for group in state["param_groups"]]
    return {"state": {key(p): s for p, s in state["state"].items()}, "param_groups": groups}
