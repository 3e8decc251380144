"""Where a training step's tensors live: the model's device, batches moved onto it, and the
DataLoader workers' seeding (so python and numpy draws differ per worker and repeat per seed)."""

import random

import numpy as np
import torch
from torch import Tensor, nn


def to_device(obj: object, device: torch.device, non_blocking: bool) -> object:
    """``obj`` with every tensor in it (dicts, lists, tuples, nested) moved to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    return obj


def seed_worker(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: python's and numpy's RNGs from torch's worker seed."""
    # torch seeds each worker; python and numpy would otherwise repeat the parent's state in all.
    seed = torch.initial_seed() % (1 << 32)
    random.seed(seed)
    np.random.seed(seed)


def model_device(model: nn.Module) -> torch.device:
    """The one device every parameter and buffer of ``model`` is on."""
    tensors = [*model.parameters(), *model.buffers()]
    if not tensors:
        raise ValueError("model: expected a module with parameters, it has none")
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(
            f"model: expected all parameters on one device, found {sorted(map(str, devices))}"
        )
    return devices.pop()
