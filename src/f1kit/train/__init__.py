"""The model-agnostic training runtime: one stage of optimizer steps with DDP, checkpoints, logs."""

from f1kit.train.checkpoint import (
    Checkpoint,
    load_latest,
    load_model_weights,
    save_checkpoint,
    save_model_weights,
)
from f1kit.train.distributed import (
    DistInfo,
    init_distributed,
    is_main,
    shutdown_distributed,
)
from f1kit.train.evaluation import EvalTracker, PeriodicEval, best_weights
from f1kit.train.metrics import MetricsLog, read_metrics
from f1kit.train.plots import loss_series, plot_losses
from f1kit.train.rng import derive_seed, seed_everything
from f1kit.train.sampler import SamplerState, ShardedBatchSampler, epoch_order
from f1kit.train.schedule import build_optimizer, build_scheduler, lr_factor, trainable_groups
from f1kit.train.settings import TrainSettings
from f1kit.train.trainer import LossFn, LossModule, StageResult, train_stage

__all__ = [
    "Checkpoint",
    "DistInfo",
    "EvalTracker",
    "LossFn",
    "LossModule",
    "MetricsLog",
    "PeriodicEval",
    "SamplerState",
    "ShardedBatchSampler",
    "StageResult",
    "TrainSettings",
    "best_weights",
    "build_optimizer",
    "build_scheduler",
    "derive_seed",
    "epoch_order",
    "init_distributed",
    "is_main",
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
    "train_stage",
    "trainable_groups",
]
