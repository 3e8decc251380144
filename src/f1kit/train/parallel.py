"""How a training stage spreads over ranks: DDP, or FSDP2 / HSDP sharding on PyTorch's own engine.

``strategy``:

* ``ddp``: every rank holds the whole model, gradients and optimizer state; gradients are
  all-reduced (`torch.nn.parallel.DistributedDataParallel`). The default.
* ``fsdp``: parameters, gradients and optimizer state sharded over all ranks
  (`torch.distributed.fsdp.fully_shard`): each unit (a MoT layer, the vision tower, ...: the
  model's ``shard_units()``) is all-gathered for its forward and backward and resharded after.
* ``hsdp``: sharded within groups of ``shard_size`` ranks, replicated across the groups (a 2-D
  mesh: gradients reduce-scattered in a group, all-reduced across groups). For nodes with fast
  links inside and slower ones between.

The stage's model is never sharded in place: `sharded_replica` builds a structural copy on the
meta device (no storage), shards it, materialises only this rank's shards on the device and
fills them from the main rank's model, one tensor at a time (broadcast, then each rank keeps its
shard). Only the main rank needs real weights: the others may hold the model's shapes alone
(meta; `holds_weights`), as `f1kit.recipe` builds them under a sharded strategy. `copy_back`
gathers the trained weights into the main rank's whole model (on the host). So no device ever
holds the whole model, and no host but the main rank's.

With ``precision: bf16`` the units compute in bfloat16 from bfloat16 copies of the fp32 shards
and reduce gradients in fp32 (``MixedPrecisionPolicy``), the FSDP form of the DDP path's
autocast. ``activation_checkpointing`` recomputes each unit's activations in the backward
(models opt in through ``set_activation_checkpointing``: F1's MoT stack, per layer).
Frozen parameters (``requires_grad=False``, e.g. stage I's Understanding expert) are sharded like
the rest but get no gradient and no optimizer state.
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

STRATEGIES = ("ddp", "fsdp", "hsdp")


@dataclass(frozen=True)
class ParallelSettings:
    """A run's parallelism (recipe section ``parallel:``); see the module docstring."""

    strategy: str = "ddp"
    shard_size: int | None = None
    activation_checkpointing: bool = False
    reshard_after_forward: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: expected one of {STRATEGIES}, got {self.strategy!r}")
        size = self.shard_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"shard_size: expected None or an integer >= 1, got {size!r}")
        if size is not None and self.strategy != "hsdp":
            raise ValueError(
                f"shard_size: only hsdp takes a shard size (fsdp shards over every rank), got"
                f" {size} with strategy {self.strategy!r}"
            )
        if self.strategy == "hsdp" and size is None:
            raise ValueError("shard_size: hsdp needs the ranks per shard group, e.g. 8 (a node)")
        for name in ("activation_checkpointing", "reshard_after_forward"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")

    @property
    def sharded(self) -> bool:
        return self.strategy != "ddp"

    def shards_over(self, world_size: int) -> bool:
        """Whether ``world_size`` ranks shard the model: a sharded strategy on more than one
        rank (one process trains the model itself, whatever the strategy)."""
        return self.sharded and world_size > 1

    def replicas(self, world_size: int) -> int:
        """How many copies of each shard the ranks hold (1 for fsdp, world for ddp)."""
        if self.strategy == "ddp":
            return world_size
        if self.strategy == "fsdp":
            return 1
        assert self.shard_size is not None
        if world_size % self.shard_size:
            raise ValueError(
                f"shard_size: {self.shard_size} does not divide the {world_size} ranks; hsdp"
                " needs whole shard groups"
            )
        return world_size // self.shard_size

    def shards(self, world_size: int) -> int:
        """Ranks a parameter is split over."""
        return world_size // self.replicas(world_size)

    def mesh(self, device: torch.device, world_size: int) -> DeviceMesh:
        """The device mesh: 1-D (shard) for fsdp, 2-D (replicate, shard) for hsdp."""
        if not self.sharded:
            raise ValueError("mesh: ddp shards nothing")
        replicas = self.replicas(world_size)
        if self.strategy == "fsdp":
            return init_device_mesh(device.type, (world_size,), mesh_dim_names=("shard",))
        return init_device_mesh(
            device.type, (replicas, world_size // replicas), mesh_dim_names=("replicate", "shard")
        )


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules sharded as units of their own: ``model.shard_units()`` when the model
    names them (F1: each MoT layer, the vision tower, ...), else none (one unit, the root).
    A unit's parameters are gathered by its ``forward``; a module the model calls through
    other methods belongs in the root, or (frozen, small) in ``model.unsharded_units()``, kept
    whole on every rank."""
    units = getattr(model, "shard_units", None)
    return list(units()) if callable(units) else []


def unsharded_units(model: nn.Module) -> list[nn.Module]:
    """The submodules FSDP leaves whole on every rank: ``model.unsharded_units()``, else none."""
    units = getattr(model, "unsharded_units", None)
    return list(units()) if callable(units) else []


def meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` whose parameters and buffers are on the meta device (no
    storage: `sharded_replica` fills them). Tensors shared between modules stay shared."""
    memo: dict[int, object] = {}
    for param in model.parameters():
        if id(param) not in memo:
            meta = torch.empty_like(param, device="meta")
            memo[id(param)] = nn.Parameter(meta, requires_grad=param.requires_grad)
    for buffer in model.buffers():
        memo.setdefault(id(buffer), torch.empty_like(buffer, device="meta"))
    return copy.deepcopy(model, memo)


def sharded_replica(
    model: nn.Module,
    wrap: Callable[[nn.Module], nn.Module],
    settings: ParallelSettings,
    mesh: DeviceMesh,
    device: torch.device,
    precision: str,
) -> tuple[nn.Module, nn.Module]:
    """A copy of ``model`` sharded over ``mesh`` with only this rank's shards on ``device``, the
    weights those of ``model``, and ``wrap(copy)``: the module the trainer calls.

    Each of ``shard_units(model)`` is a unit; the rest is the root unit, ``fully_shard`` on
    ``wrap(copy)``: its forward runs every step, so whatever method of the model the loss calls
    runs with the root's parameters gathered. Returns (wrapped, copy)."""
    replica = meta_copy(model)
    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if precision == "bf16" else None,
        reduce_dtype=torch.float32,
    )
    ignored = {p for m in unsharded_units(replica) for p in m.parameters()}
    for unit in shard_units(replica):
        fully_shard(
            unit,
            mesh=mesh,
            mp_policy=policy,
            reshard_after_forward=settings.reshard_after_forward,
            ignored_params=ignored,
        )
    wrapped = wrap(replica)
    # The root's parameters are gathered for the whole step: no reshard between its forward and
    # backward (torch's own advice for the root).
    fully_shard(
        wrapped,
        mesh=mesh,
        mp_policy=policy,
        reshard_after_forward=False,
        ignored_params=ignored,
    )
    replica.to_empty(device=device)
    with torch.no_grad():
        for buffer, source in zip(replica.buffers(), model.buffers(), strict=True):
            buffer.copy_(_from_main(source, device))
        sources = dict(model.named_parameters())
        for name, param in replica.named_parameters():
            full = _from_main(sources[name].detach(), device)
            if isinstance(param, DTensor):
                full = distribute_tensor(full, param.device_mesh, param.placements).to_local()
                param.to_local().copy_(full)
            else:  # an unsharded unit's (ignored by FSDP)
                param.copy_(full)
    if settings.activation_checkpointing:
        set_checkpointing(replica, True)
    return wrapped, replica


def holds_weights(model: nn.Module) -> bool:
    """False on a rank that keeps only the model's shapes (the meta device): under a sharded
    strategy every rank but the main one (`f1kit.recipe` builds them so)."""
    return not any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def _from_main(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` as the main rank holds it, whole, on ``device`` (one tensor at a time: a rank
    holding only shapes receives it; collective in a process group)."""
    full = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
    if not tensor.is_meta:
        full.copy_(tensor)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(full, src=0)
    return full


def set_checkpointing(model: nn.Module, on: bool) -> None:
    """Switch activation checkpointing of every module of ``model`` that offers it."""
    switches = [m for m in model.modules() if hasattr(m, "set_activation_checkpointing")]
    if on and not switches:
        raise ValueError(
            f"activation_checkpointing: {type(model).__name__} has no module with"
            " set_activation_checkpointing (F1's MoT stack has)"
        )
    for module in switches:
        module.set_activation_checkpointing(on)


def copy_back(replica: nn.Module, model: nn.Module) -> None:
    """Gather the replica's trained parameters (and its buffers, never sharded) into ``model``
    (on every rank; collective)."""
    targets = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in replica.named_parameters():
            full = param.full_tensor() if isinstance(param, DTensor) else param
            if not targets[name].is_meta:  # a rank holding only shapes gathers, keeps nothing
                targets[name].copy_(full.to(targets[name].device))
        for buffer, source in zip(model.buffers(), replica.buffers(), strict=True):
            if not buffer.is_meta:
                buffer.copy_(source.to(buffer.device))
