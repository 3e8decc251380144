"""A training stage's state across interruptions and ranks: restoring a checkpoint into the
trained module, a sharded stage's checkpoint, and the evaluations every rank takes part in.

Each function here is called by every rank at the same point of `f1kit.train.train_stage`; the
ones marked collective make every rank communicate, so all must call them or none.
"""

import logging
from pathlib import Path

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from f1kit.train.checkpoint import (
    MODEL_FILE,
    STATE_DIR,
    Checkpoint,
    CheckpointError,
    begin_checkpoint,
    pending_dir,
    publish_checkpoint,
)
from f1kit.train.distributed import DistInfo, all_gather_objects, barrier, is_main
from f1kit.train.evaluation import EvalTracker, PeriodicEval
from f1kit.train.model_weights import save_model_weights
from f1kit.train.parallel import copy_back
from f1kit.train.placement import model_device
from f1kit.train.rng import derive_seed, seed_everything, set_rng_state
from f1kit.train.sampler import SamplerState
from f1kit.train.settings import TrainSettings
from f1kit.train.sharded_state import load_sharded, save_sharded

log = logging.getLogger(__name__)

# Tags of derive_seed's tuples (longer than the loss draws' (seed, 0, step)): the global
# generators' and the DataLoader workers' streams.
GLOBAL_RNG, LOADER_RNG = 1, 2


def restore(
    ckpt: Checkpoint,
    net: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    info: DistInfo,
    settings: TrainSettings,
    sharded: bool,
) -> tuple[int, SamplerState, float]:
    """Load a checkpoint into the trained module and trainer state; returns (step, sampler,
    elapsed). A sharded checkpoint (DCP, ``state/``) loads at any world size and strategy; a
    whole one (``model.safetensors`` + the optimizer in ``trainer.pt``) only into an unsharded
    stage."""
    if sharded and not ckpt.sharded:
        raise CheckpointError(
            f"{ckpt.path}: written by an unsharded (ddp) stage; resume it with parallel.strategy"
            " ddp (a sharded stage resumes from the DCP shards its own checkpoints hold)"
        )
    state = ckpt.trainer_state()
    step = int(state["step"])
    if step > settings.steps:
        raise ValueError(
            f"steps: the checkpoint {ckpt.path} is at step {step}, past this stage's"
            f" {settings.steps} steps"
        )
    if ckpt.sharded:
        load_sharded(ckpt.path / STATE_DIR, net, optimizer)
    else:
        ckpt.load_model(net)
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_states = state["rng"]
    if len(rng_states) == info.world_size:
        set_rng_state(rng_states[info.rank])
    else:
        log.warning(
            "checkpoint taken with %d ranks, resuming with %d: global RNGs are re-seeded",
            len(rng_states),
            info.world_size,
        )
        seed_everything(derive_seed(settings.seed, GLOBAL_RNG, info.rank, step))
    sampler = SamplerState(**state["sampler"])
    return step, sampler, float(state.get("elapsed_s", 0.0))


def save_sharded_checkpoint(
    out_dir: Path,
    step: int,
    net: nn.Module,
    model: nn.Module,
    optimizer: Optimizer,
    trainer_state: dict,
    meta: dict,
    export: bool,
) -> None:
    """A sharded stage's checkpoint: every rank writes its DCP shards of ``net``; with
    ``export`` the trained weights are gathered into ``model`` and the main rank writes its
    ``model.safetensors`` (the file layout, whatever the strategy); the main rank writes the
    rest and publishes it. Collective."""
    if is_main():
        begin_checkpoint(out_dir, step)
    barrier()
    tmp = pending_dir(out_dir, step)
    save_sharded(tmp / STATE_DIR, net, optimizer)
    if export and net is not model:
        copy_back(net, model)
    if is_main():
        if export:
            save_model_weights(model.state_dict(), tmp / MODEL_FILE)
        publish_checkpoint(out_dir, step, trainer_state, meta)


def evaluate_on_main(
    tracker: EvalTracker | None,
    step: int,
    model: nn.Module,
    weights: Path,
    info: DistInfo,
    sharded: bool,
) -> None:
    """The main rank evaluates ``model`` at ``step`` (the trained weights, gathered into it
    before by a sharded stage); a sharded stage's main rank moves it onto its device for the
    evaluation and back to the host after."""
    if tracker is None:
        return
    if not weights.is_file():
        log.warning(
            "step %d: no %s to evaluate (a sharded checkpoint holds it only at evaluation"
            " steps and at the end); evaluation skipped",
            step,
            weights,
        )
        return
    host = model_device(model)
    if sharded:
        model.to(info.device)
    try:
        tracker.evaluate(step, model, weights)
    finally:
        if sharded:
            model.to(host)


def agree_to_stop(tracker: EvalTracker | None, evaluation: PeriodicEval | None) -> bool:
    """The main rank's early-stopping decision, known to every rank (a collective call)."""
    if evaluation is None:
        return False
    return bool(all_gather_objects(tracker is not None and tracker.stop)[0])
