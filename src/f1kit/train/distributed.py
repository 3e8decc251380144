"""Process-group setup for ``torchrun``: one process per device, DDP gradient all-reduce.

``torchrun --nproc_per_node N -m f1kit.cli ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each process; :func:`init_distributed` reads them and joins
the group (NCCL when CUDA is available, gloo otherwise). Without them (or with ``WORLD_SIZE=1``) it
is a no-op and everything below behaves as a single process. It is idempotent, so every training
stage may call it.
"""

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from jaxtyping import Shaped
from torch import Tensor

log = logging.getLogger(__name__)

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the group and the device it should train on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"{name}: expected the torchrun environment variable, it is not set")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {value!r}") from None


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by the torchrun variables, or run as one process.

    ``backend`` defaults to ``"nccl"`` when CUDA is available and ``"gloo"`` otherwise. On CUDA
    the process's current device becomes ``cuda:LOCAL_RANK``; put the model there.
    """
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, _device(local_rank))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(0, 1, 0, _device(0))
    missing = [name for name in _ENV if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; launch with torchrun"
        )
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK: expected 0 <= RANK < WORLD_SIZE={world_size}, got {rank}")
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build")
    device = _device(local_rank)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Rank 0 alone evaluates, hashes checkpoints and writes reports while the others wait in a
    # collective; NCCL's default 10-minute watchdog would abort a paper-size evaluation.
    dist.init_process_group(backend=backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    log.info("joined process group: rank %d of %d (%s, %s)", rank, world_size, backend, device)
    return DistInfo(rank, world_size, local_rank, device)


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined (call once at the end of the program).

    Every rank first waits at a barrier: a rank that tore its group down (rank 0 hosts the
    rendezvous store) while another still had a collective or the teardown in flight made that
    one abort at exit ("terminate called without an active exception", seen once in CI)."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0, and in a single process: the one that logs and writes checkpoints."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if world_size() == 1:
        return [obj]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: Shaped[Tensor, "*shape"]) -> Shaped[Tensor, "*shape"]:
    """Element-wise sum over ranks, in place (unchanged in a single process)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
