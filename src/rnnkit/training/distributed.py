"""Training on several processes: ``torchrun`` starts them, the one trainer runs in each.

Data parallelism with torch's DistributedDataParallel (Li et al. 2020, "PyTorch Distributed:
Experiences on Accelerating Data Parallel Training"): every process holds the whole model,
computes the gradient of its own part of each global batch, and DDP averages the gradients
over processes in buckets while backward is still running, so every process takes the same
optimiser step and the weights stay identical.

- Started by ``torchrun``, a process finds its place in the environment variables ``RANK``,
  ``WORLD_SIZE`` and ``LOCAL_RANK``, and joins the group over gloo (CPU) or NCCL (CUDA,
  one GPU per process: ``cuda:LOCAL_RANK``). Without them the world is one process and
  nothing here communicates.
- Every task's model has ``loss(batch, carry)`` (:class:`rnnkit.models.loss.Loss`); the
  trainer calls it through :class:`Objective`, a module whose forward is that loss, and DDP
  wraps the objective, so it sees the whole computation of a step.
- ``--batch-size`` is the global batch. A task's ``batch(step, rank, size)`` returns this
  process's part of step ``step``'s batch (:func:`rnnkit.data.parts.part`: every size-th
  example from the rank's own; the char-LM's equal blocks of streams). Each part's loss is a
  sum, divided by the weight summed over every process before backward, so the average DDP
  takes is the one-process mean loss of the whole batch, however unevenly the parts fall.
- Evaluation runs on every process, each on its share of the validation data
  (:meth:`World.map`, :meth:`World.sum`), and every process ends with the same metrics.
- What is per process: its part of each batch, the hidden state carried between truncated
  BPTT windows, the random state (dropout is seeded with ``seed + rank``). What is global:
  the weights, optimiser state, step, schedule, losses and tokens reported.
- Rank 0 writes the run directory, and gathers every process's random and carried state into
  ``last.safetensors`` so a resumed run continues exactly. A group restarted by ``torchrun
  --max-restarts`` after a worker died resumes from it (:func:`restarted`).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """Where this process stands among the processes training together."""

    rank: int = 0  # this process, 0 .. size-1; rank 0 writes the run directory
    size: int = 1  # processes in all (torchrun's WORLD_SIZE)
    local_rank: int = 0  # this process on its machine; picks its GPU

    def share(self, items: Sequence) -> list:
        """This process's share of ``items`` (every size-th from its rank; may be empty)."""
        return list(items[self.rank :: self.size])

    def map(self, fn: Callable[[list], Sequence], items: Sequence) -> list:
        """``fn`` (a list of items -> one result per item) over ``items``, each process on its
        share; every process gets all the results, in the order of ``items``."""
        if self.size == 1:
            return list(fn(list(items)))
        mine = self.share(items)
        results = list(fn(mine)) if mine else []
        parts: list = [None] * self.size
        dist.all_gather_object(parts, results)
        out: list = [None] * len(items)
        for rank, results in enumerate(parts):
            out[rank :: self.size] = results
        return out

    def sum(self, *values: float) -> list[float]:
        """``values`` summed over every process (in float64), on every process."""
        if self.size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=_device())
        dist.all_reduce(tensor)
        return tensor.tolist()


ALONE = World()  # a run on one process: shares are everything, sums are the values


class Objective(nn.Module):
    """The model's loss as a module's forward: what DDP wraps, so that one call of it is the
    whole computation of a step (DDP prepares its gradient buckets in forward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch, carry):
        return self.model.loss(batch, carry)


def env_int(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not a whole number") from None


def restarted() -> bool:
    """Whether torchrun restarted this group after a worker failed (``--max-restarts``)."""
    return env_int("TORCHELASTIC_RESTART_COUNT", "0") > 0


def join(device: torch.device) -> tuple[World, torch.device]:
    """This process's world from torchrun's variables, and its device; joins the group once."""
    size = env_int("WORLD_SIZE", "1")
    if size <= 1:
        return World(), device
    if "RANK" not in os.environ:
        raise ValueError(f"WORLD_SIZE is {size} but RANK is not set: start the run with torchrun")
    world = World(env_int("RANK", "0"), size, env_int("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(minutes=30)
        store = meeting_store(world, timeout)
        dist.init_process_group(backend, store=store, rank=world.rank, world_size=world.size,
                                timeout=timeout)  # fmt: skip
        atexit.register(dist.destroy_process_group)
    return world, device


def meeting_store(world: World, timeout: timedelta) -> dist.Store:
    """The key-value store where the processes exchange their addresses, under a prefix of
    this attempt: a group that torchrun restarts meets in the same store as the attempt
    before, whose stale addresses a new process could otherwise read and wait on forever.
    Under torchrun the agent hosts the store; otherwise rank 0 does."""
    host = os.environ.get("MASTER_ADDR")
    if not host or "MASTER_PORT" not in os.environ:
        raise ValueError("MASTER_ADDR and MASTER_PORT are not set: start the run with torchrun")
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(host, env_int("MASTER_PORT", "0"), world.size,
                          is_master=not agent and world.rank == 0, timeout=timeout,
                          multi_tenant=not agent)  # fmt: skip
    return dist.PrefixStore(f"rnnkit/attempt{env_int('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def wrap(world: World, model: nn.Module, device: torch.device) -> nn.Module:
    """The module the trainer calls for a step's loss: the model's :class:`Objective`, in DDP
    on several processes. DDP starts every process from rank 0's weights. A model whose
    steps may leave parameters unused (``skips_parameters``, e.g. a captioner's branch)
    asks DDP to find them each step, as DDP documents, rather than wait for their gradients."""
    objective = Objective(model)
    if world.size == 1:
        return objective
    return nn.parallel.DistributedDataParallel(
        objective,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=getattr(model, "skips_parameters", False),
    )


def global_sums(world: World, total: torch.Tensor, weight: float, tokens: int):
    """The loss, weight and tokens of the whole global batch, on every process, from each
    process's part (one small all-reduce, before backward)."""
    values = [float(total.detach()), float(weight), float(tokens)]
    return world.sum(*values)


def agree(world: World, elapsed: float, interrupted: bool, reserve: float = 0.0):
    """(the longest elapsed time, whether any process was interrupted, the longest time held
    back for the final evaluation) on every process: the schedule (which may depend on
    time) and the decisions to evaluate and to stop must be the same."""
    if world.size == 1:
        return elapsed, interrupted, reserve
    values = torch.tensor([elapsed, float(interrupted), reserve], dtype=torch.float64,
                          device=_device())  # fmt: skip
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values[0].item(), bool(values[1].item()), values[2].item()


def gather_states(world: World, state: dict) -> list[dict]:
    """Every process's ``state`` (tensors of the same names and shapes everywhere), by rank."""
    if world.size == 1:
        return [state]
    gathered: list[dict] = [{} for _ in range(world.size)]
    for name in sorted(state):
        tensor = state[name].to(_device()).contiguous()
        parts = [torch.empty_like(tensor) for _ in range(world.size)]
        dist.all_gather(parts, tensor)
        for rank, tensor in enumerate(parts):
            gathered[rank][name] = tensor.cpu()
    return gathered


def barrier(world: World) -> None:
    """Wait until every process is here (rank 0 has written what the others may read next)."""
    if world.size > 1:
        dist.barrier()


def _device() -> torch.device:
    """Where collectives' small tensors live: NCCL needs the GPU, gloo takes the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
