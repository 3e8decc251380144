"""The model-agnostic training runtime: one stage of optimizer steps with DDP, checkpoints, logs."""

from f1kit.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoValidCheckpointError,
    load_checkpoint,
    load_latest,
    save_checkpoint,
    verify_checkpoint,
)
from f1kit.train.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    init_distributed,
    is_main,
    shutdown_distributed,
)
from f1kit.train.evaluation import EvalTracker, PeriodicEval, best_weights
from f1kit.train.metrics import MetricsLog, read_metrics
from f1kit.train.model_weights import (
    WeightsError,
    load_model_weights,
    save_model_weights,
    tied_names,
)
from f1kit.train.parallel import STRATEGIES, ParallelSettings
from f1kit.train.plots import loss_series, plot_losses
from f1kit.train.rng import derive_seed, seed_everything
from f1kit.train.run_lock import RunLock, RunLockedError
from f1kit.train.sampler import SamplerState, ShardedBatchSampler, epoch_order
from f1kit.train.schedule import build_optimizer, build_scheduler, lr_factor, trainable_groups
from f1kit.train.settings import TrainSettings
from f1kit.train.trainer import LossFn, LossModule, StageResult, train_stage

__all__ = [
    "STRATEGIES",
    "Checkpoint",
    "CheckpointError",
    "DistInfo",
    "EvalTracker",
    "LossFn",
    "LossModule",
    "MetricsLog",
    "NoValidCheckpointError",
    "ParallelSettings",
    "PeriodicEval",
    "RunLock",
    "RunLockedError",
    "SamplerState",
    "ShardedBatchSampler",
    "StageResult",
    "TrainSettings",
    "WeightsError",
    "all_gather_objects",
    "barrier",
    "best_weights",
    "build_optimizer",
    "build_scheduler",
    "derive_seed",
    "epoch_order",
    "init_distributed",
    "is_main",
    "load_checkpoint",
    "load_latest",
    "load_model_weights",
    "loss_series",
    "lr_factor",
    "plot_losses",
    "read_metrics",
    "save_checkpoint",
    "save_model_weights",
    "seed_everything",
    "shutdown_distributed",
    "tied_names",
    "train_stage",
    "trainable_groups",
    "verify_checkpoint",
]
