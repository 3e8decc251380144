"""AdamW over named parameter groups and the warmup + cosine learning-rate schedule (DESIGN.md s5).

For optimizer step ``k`` (0-based) of a stage with ``T`` steps and ``W`` warmup steps, every group's
learning rate is its base lr times

    f(k) = (k + 1) / W                                     for k < W   (linear warmup from 0)
    f(k) = m + (1 - m) * (1 + cos(pi * p)) / 2,  p = (k - W) / (T - W - 1)   otherwise (cosine)

so the last warmup step reaches the full lr, the first step after warmup runs at the full lr and
the last step at ``m = min_lr_ratio``. ``schedule="constant"`` keeps f = 1 after warmup.
"""

import logging
import math

from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR

from f1kit.train.settings import TrainSettings

log = logging.getLogger(__name__)


def lr_factor(step: int, settings: TrainSettings) -> float:
    """Multiplier of every group's base lr at 0-based optimizer step ``step``."""
    warmup, total = settings.warmup_steps, settings.steps
    if step < warmup:
        return (step + 1) / warmup
    if settings.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    m = settings.min_lr_ratio
    return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_names(model: nn.Module) -> dict[int, str]:
    # Tied parameters appear once in named_parameters(); the first name is the one we report.
    return {id(p): name for name, p in model.named_parameters()}


def trainable_groups(model: nn.Module, param_groups: list[dict] | None) -> list[dict]:
    """Optimizer groups holding only trainable parameters, each with a ``"name"``.

    ``None`` puts every parameter with ``requires_grad`` into one group named ``"all"``. Frozen
    parameters in the given groups are dropped (they never enter the optimizer); a trainable
    parameter of ``model`` that is in no group is an error, since it would get gradients (and be
    all-reduced under DDP) but never change.
    """
    names = _param_names(model)
    if param_groups is None:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": params, "name": "all"}]
    else:
        if not isinstance(param_groups, list) or not param_groups:
            raise ValueError("param_groups: expected a non-empty list of dicts or None")
        groups, seen = [], set()
        for i, group in enumerate(param_groups):
            if not isinstance(group, dict) or "params" not in group:
                raise ValueError(f"param_groups[{i}]: expected a dict with 'params', got {group!r}")
            params = list(group["params"])
            for p in params:
                if id(p) not in names:
                    raise ValueError(f"param_groups[{i}]: holds a parameter that is not in model")
                if id(p) in seen:
                    raise ValueError(
                        f"param_groups[{i}]: parameter {names[id(p)]!r} is in more than one group"
                    )
                seen.add(id(p))
            kept = [p for p in params if p.requires_grad]
            if len(kept) < len(params):
                log.debug("param group %d: dropped %d frozen tensors", i, len(params) - len(kept))
            groups.append({**group, "params": kept, "name": str(group.get("name", f"group{i}"))})
        missing = [
            names[id(p)] for p in model.parameters() if p.requires_grad and id(p) not in seen
        ]
        if missing:
            raise ValueError(
                f"param_groups: {len(missing)} trainable parameters are in no group (first:"
                f" {missing[0]!r}); add them to a group or freeze them with requires_grad_(False)"
            )
    if not any(g["params"] for g in groups):
        raise ValueError("model: no trainable parameters (every requires_grad is False)")
    group_names = [g["name"] for g in groups]
    if len(set(group_names)) != len(group_names):
        raise ValueError(f"param_groups: group names must be unique, got {group_names}")
    return groups


def build_optimizer(
    model: nn.Module, settings: TrainSettings, param_groups: list[dict] | None = None
) -> Optimizer:
    """AdamW over the trainable groups; a group's own ``lr`` / ``weight_decay`` win."""
    groups = trainable_groups(model, param_groups)
    return AdamW(groups, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)


def build_scheduler(optimizer: Optimizer, settings: TrainSettings) -> LambdaLR:
    """Scales each group's own base lr by :func:`lr_factor`; step it once per optimizer step."""
    return LambdaLR(optimizer, lambda step: lr_factor(step, settings))
