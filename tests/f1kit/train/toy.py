"""A toy regression task for the trainer tests, importable in-process and from subprocess scripts.

Targets are a fixed linear map of the inputs plus noise, so the loss has a known floor (the noise
variance 0.01) and any working optimizer drives it down quickly.
"""

import time

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from f1kit.global_batch import GlobalBatch

WEIGHTS = (1.0, -2.0, 3.0, 0.5)


class Regression(Dataset):
    """``n`` samples ``{"x": (4,), "y": ()}`` with ``y = x . WEIGHTS + 0.1 noise``."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, len(WEIGHTS), generator=g)
        self.y = self.x @ torch.tensor(WEIGHTS) + 0.1 * torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class Net(nn.Module):
    """Linear -> tanh -> dropout -> linear on ``x + 0.1 frozen(x)`` (``frozen`` never trains)."""

    def __init__(self, dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.hidden = nn.Linear(4, 16)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(16, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.drop(torch.tanh(self.hidden(x + 0.1 * self.frozen(x))))).squeeze(-1)

    def custom_loss(self, batch: dict[str, Tensor]) -> Tensor:
        # Not `forward`: the trainer must still run it inside DDP's forward for gradients to sync.
        return ((self(batch["x"]) - batch["y"]) ** 2).mean()


def make_loss(noise: float = 0.0, sleep: float = 0.0):
    """A loss_fn: MSE against targets jittered with ``noise`` drawn from the step's draws."""

    def loss_fn(model: nn.Module, batch: dict, draws: GlobalBatch):
        if sleep:
            time.sleep(sleep)
        y = batch["y"]
        if noise:
            g = draws.generator
            y = y + noise * draws.rows(lambda n: torch.randn(n, generator=g, device=g.device))
        loss = ((model(batch["x"]) - y) ** 2).mean()
        return loss, {"mse_loss": loss.detach()}

    return loss_fn


def custom_method_loss(model: nn.Module, batch: dict, draws: GlobalBatch):
    """A custom method of the model (not ``forward``) on targets jittered per sample: the jitter
    comes from the global batch's draws, so ranks that split a batch jitter as one process."""
    g = draws.generator
    jitter = draws.rows(lambda n: torch.randn(n, generator=g, device=g.device))
    loss = model.custom_loss({**batch, "y": batch["y"] + 0.5 * jitter})
    return loss, {}
