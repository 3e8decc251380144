"""Seeds and random-number-generator state: what makes a stage reproducible and resumable.

Two kinds of randomness reach a training step:

* the model's own draws (flow time and noise, foresight sampling) take the ``torch.Generator``
  the trainer passes to the loss; it is re-seeded every step from ``(seed, rank, step)``, so it
  needs no saved state and never depends on how many numbers earlier steps drew;
* anything that uses the global generators (dropout, a stray ``np.random`` call) gets python,
  numpy and torch (CPU and CUDA) seeded from ``(seed, rank)`` at the start of a stage, and their
  states travel in the checkpoint as plain containers and tensors (``torch.load(weights_only=True)``
  reads them).
"""

import random

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (order matters)."""
    hi, lo = np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """The global generators' states as tensors, ints and strings only."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` captured."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        # A machine with fewer devices restores the ones it has.
        for index, device_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state.cpu(), index)
