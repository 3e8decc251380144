"""The numbers of one training stage: optimizer, schedule, precision, seed and bookkeeping cadence.

A recipe stage maps 1:1 onto :class:`TrainSettings`; every field is validated at construction and
an error names the field, the allowed values and what was given.
"""

import math
from dataclasses import dataclass

SCHEDULES = ("cosine", "constant")
PRECISIONS = ("fp32", "bf16")


def _int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; `steps: true` in a YAML file is a mistake, not 1 step.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")


def _float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return float(value)


@dataclass(frozen=True)
class TrainSettings:
    """One training stage's numbers.

    ``batch_size`` is the global batch: under DDP each of the ``w`` ranks gets ``batch_size / w``
    samples per step. ``lr`` is the base learning rate of parameter groups that carry none of
    their own. The schedule multiplies every group's base lr by the same factor: a linear warmup
    over ``warmup_steps`` steps, then a cosine decay to ``min_lr_ratio`` at the last step
    (``"cosine"``) or a flat 1 (``"constant"``). ``precision="bf16"`` runs the loss under
    ``torch.autocast`` with bfloat16 while weights, gradients and optimizer state stay fp32.
    A checkpoint is written every ``checkpoint_every`` steps and after the last step; a metrics
    record every ``log_every`` steps, at every checkpoint and after the last step.

    Example::

        TrainSettings(steps=1000, batch_size=64, lr=3e-4, warmup_steps=100, precision="bf16")
    """

    steps: int
    batch_size: int
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    num_workers: int = 0
    # DDP must be told when some trainable parameters may get no gradient in a step (an expert
    # whose loss is switched off); finding them costs a graph traversal per step, so it is opt-in.
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        _int("steps", self.steps, 1)
        _int("batch_size", self.batch_size, 1)
        if _float("lr", self.lr) <= 0:
            raise ValueError(f"lr: expected a learning rate > 0, got {self.lr}")
        betas = self.betas
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas: expected two numbers like (0.9, 0.95), got {betas!r}")
        betas = tuple(_float(f"betas[{i}]", b) for i, b in enumerate(betas))
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas: expected both in [0, 1), got {betas}")
        # YAML gives lists; keep the frozen value hashable and uniform.
        object.__setattr__(self, "betas", betas)
        if _float("weight_decay", self.weight_decay) < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay}")
        _int("warmup_steps", self.warmup_steps, 0)
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"warmup_steps: expected at most steps ({self.steps}), got {self.warmup_steps}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= _float("min_lr_ratio", self.min_lr_ratio) <= 1.0:
            raise ValueError(f"min_lr_ratio: expected a value in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None and _float("grad_clip", self.grad_clip) <= 0:
            raise ValueError(f"grad_clip: expected None (no clipping) or > 0, got {self.grad_clip}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        _int("seed", self.seed, 0)
        _int("checkpoint_every", self.checkpoint_every, 1)
        _int("log_every", self.log_every, 1)
        _int("num_workers", self.num_workers, 0)
        if not isinstance(self.find_unused_parameters, bool):
            raise TypeError(
                f"find_unused_parameters: expected a bool, got {self.find_unused_parameters!r}"
            )

    def local_batch_size(self, world_size: int) -> int:
        """Samples per rank and step; the global batch must split evenly over the ranks."""
        if self.batch_size % world_size:
            raise ValueError(
                f"batch_size: the global batch {self.batch_size} does not split evenly over"
                f" {world_size} ranks; use a multiple of {world_size}"
            )
        return self.batch_size // world_size
