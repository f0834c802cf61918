"""Training on several processes: ``torchrun`` starts them, the one trainer runs in each.

Data parallelism, as DistributedDataParallel does it (Li et al. 2020, "PyTorch Distributed:
Experiences on Accelerating Data Parallel Training"): every process holds the whole model,
trains on its own part of each global batch, and the gradients are averaged over processes
before every optimiser step, so all processes take the same step and stay identical.

- Started by ``torchrun``, a process finds its place in the environment variables ``RANK``,
  ``WORLD_SIZE`` and ``LOCAL_RANK``, and joins the group over gloo (CPU) or NCCL (CUDA,
  one GPU per process: ``cuda:LOCAL_RANK``). Without them the world is one process and
  nothing here communicates.
- ``--batch-size`` is the global batch: a batch with a ``shard(rank, size)`` method (the
  char-LM's :class:`rnnkit.data.Window`) is cut into equal blocks, one per process, so the
  mean of the processes' mean losses is the one-process loss of the same batch and the run
  matches a one-process run up to float rounding. Other tasks' batches are not cut: each
  process trains the whole batch with its own dropout (correct, not faster).
- What is per process: its block of streams, the hidden state carried between truncated-BPTT
  windows, the random state (dropout is seeded with ``seed + rank``). What is global: the
  weights, optimiser state, step, schedule, losses and tokens reported.
- Rank 0 alone evaluates and writes the run directory; it shares the validation loss so every
  process takes the same schedule decisions, and gathers every process's random and carried
  state into ``last.safetensors`` so a resumed run continues exactly.

Why not wrap the model in DDP: the tasks' loss functions reach into the model
(``model.head.weight.device``, ``model.rnn``), which DDP hides behind ``.module``; one
all-reduce of the flattened gradients after backward gives the same average DDP computes,
without DDP's overlap of communication with backward, which matters little at these sizes.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process stands among the processes training together."""

    rank: int = 0  # this process, 0 .. size-1; rank 0 writes the run directory
    size: int = 1  # processes in all (torchrun's WORLD_SIZE)
    local_rank: int = 0  # this process on its machine; picks its GPU


def env_int(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not a whole number") from None


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
        dist.init_process_group(backend, timeout=timedelta(minutes=60))  # rank 0 evaluates alone
        atexit.register(dist.destroy_process_group)
    return world, device


def broadcast_weights(world: World, model: torch.nn.Module) -> None:
    """Start every process from rank 0's weights (they are built from one seed anyway)."""
    if world.size > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(
    world: World, params, loss: float, tokens: int, sharded: bool
) -> tuple[float, int]:
    """Average the gradients of ``params`` over processes, in place; return the mean loss and
    the tokens of the global batch (summed if the batch was sharded, else every process's).

    One all-reduce of one flat buffer: the gradients, then the loss and the token count. A
    parameter without a gradient here stays without one (its zeros still go into the sum, so
    every process must agree on which parameters were used, as with DDP's default).
    """
    if world.size == 1:
        return loss, tokens
    params = [p for p in params if p.requires_grad]
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    extras = torch.tensor([loss, tokens], dtype=torch.float32, device=grads[0].device)
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [extras])  # (P + 2,)
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for p, g in zip(params, grads, strict=True):
        if p.grad is not None:
            p.grad.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    mean_loss, mean_tokens = flat[-2].item(), flat[-1].item()
    return mean_loss, round(mean_tokens * world.size) if sharded else tokens


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


def share_from_main(world: World, value: float) -> float:
    """Rank 0's ``value`` (a validation loss) on every process."""
    if world.size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.broadcast(tensor, src=0)
    return tensor.item()


def gather_states(world: World, state: dict) -> list[dict]:
    """Every process's ``state`` (tensors of the same names and shapes everywhere), by rank."""
    if world.size == 1:
        return [state]
    gathered: list[dict] = [{} for _ in range(world.size)]
    for name in sorted(state):
        tensor = state[name].to(_device()).contiguous()
        parts = [torch.empty_like(tensor) for _ in range(world.size)]
        dist.all_gather(parts, tensor)
        for rank, part in enumerate(parts):
            gathered[rank][name] = part.cpu()
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
