"""One training stage: AdamW + warmup/cosine, fp32 or bf16 autocast, DDP, resumable checkpoints.

The loss contract. A stage trains a model through a loss function
``loss_fn(model, batch, draws) -> (loss, metrics)``: ``model`` is the module given to
:func:`train_stage` (never a wrapper, so custom methods such as ``model.generation_loss(...)`` are
callable), ``batch`` the collated batch already on the model's device, ``draws`` a
`f1kit.global_batch.GlobalBatch` for the model's random draws: its ``generator`` (on that device)
is re-seeded every step from ``(seed, step)``, the same on every rank, and ``draws.rows(draw)``
draws for the whole global batch and keeps this rank's rows, so sample ``i`` of a step gets the
same numbers on any number of ranks (per-sample noise must come from ``rows``). It returns the
scalar loss to minimise and a dict of floats (or scalar tensors) to log.

Why the model is not called through ``DistributedDataParallel`` by the loss function: DDP
synchronises gradients only for a backward that follows *its own* forward (the forward prepares
the reducer for the coming backward); a loss that calls methods of the raw module skips that and
the ranks' gradients silently stop agreeing, or DDP fails in the next step. So the trainer puts
the model and the loss function into one small module whose ``forward(batch, generator)`` *is*
``loss_fn(model, batch, generator)``, and wraps that in DDP. Whatever the loss calls on the model
then runs inside DDP's forward, and the loss function needs no knowledge of DDP. DDP is used only
with more than one rank; a trainable parameter that may get no gradient in some step needs
``TrainSettings.find_unused_parameters``.

Data and ranks. The global batch of step ``i`` is a fixed slice of one seeded sample stream
(:class:`ShardedBatchSampler`); rank ``r`` takes its contiguous ``batch_size / world_size`` part,
so the per-rank mean losses average to the global-batch mean and DDP's averaged gradient equals
the single-process gradient. Logged values are averaged over ranks (an all-reduce at log steps
only) and over the steps since the last record. Rank 0 alone writes metrics, the progress bar and
checkpoints; every rank waits at a barrier after each checkpoint.

Output directory of a stage::

    metrics.jsonl   one record per logged step: step, loss, loss_fn metrics, grad_norm,
                    lr/<group>, samples_per_s, elapsed_s
    tb/             TensorBoard events (only when tensorboard is installed)
    checkpoints/    see f1kit.train.checkpoint

Randomness in a dataset's ``__getitem__`` should derive from the sample index to be reproducible
across resumes; DataLoader workers are seeded, but their order restarts with the resumed loader.
"""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset

from f1kit.global_batch import GlobalBatch
from f1kit.train.checkpoint import (
    MODEL_FILE,
    CheckpointError,
    NoValidCheckpointError,
    load_checkpoint,
    load_latest,
    save_checkpoint,
    step_name,
)
from f1kit.train.distributed import (
    all_gather_objects,
    barrier,
    init_distributed,
)
from f1kit.train.evaluation import EvalTracker, PeriodicEval
from f1kit.train.metrics import MetricsLog
from f1kit.train.parallel import ParallelSettings, copy_back, set_checkpointing, sharded_replica
from f1kit.train.placement import model_device, seed_worker, to_device
from f1kit.train.progress import StageProgress
from f1kit.train.rng import derive_seed, get_rng_state, seed_everything
from f1kit.train.sampler import ShardedBatchSampler
from f1kit.train.schedule import build_optimizer, build_scheduler
from f1kit.train.settings import TrainSettings
from f1kit.train.stage_state import (
    GLOBAL_RNG,
    LOADER_RNG,
    agree_to_stop,
    evaluate_on_main,
    restore,
    save_sharded_checkpoint,
)
from f1kit.train.step_stats import StepStats

log = logging.getLogger(__name__)

# Seeds are derive_seed(seed, 0, step) for the loss's draws on every rank (the 0 keeps the
# one-process stream of the rank-seeded trainer before it); GLOBAL_RNG and LOADER_RNG tag longer
# tuples, for the global generators' and the loader's worker seeds' streams.

LossFn = Callable[[nn.Module, dict, GlobalBatch], tuple[Tensor, dict[str, float | Tensor]]]


@dataclass(frozen=True)
class StageResult:
    """What a finished stage reports (identical on every rank)."""

    steps: int
    final_loss: float
    wall_seconds: float
    checkpoint: Path
    metrics_path: Path
    resumed_from: int | None = None


class LossModule(nn.Module):
    """``forward(batch, draws) = loss_fn(model, batch, draws)``: the unit DDP wraps."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict, draws: GlobalBatch) -> tuple[Tensor, dict]:
        return _check_output(self.loss_fn(self.model, batch, draws))


def _groups_of(net: nn.Module, model: nn.Module, groups: list[dict] | None) -> list[dict] | None:
    """``groups`` (of ``model``'s parameters) over the same-named parameters of ``net``."""
    if groups is None or net is model:
        return groups
    names = {id(p): n for n, p in model.named_parameters()}
    own = dict(net.named_parameters())
    return [{**g, "params": [own[names[id(p)]] for p in g["params"]]} for g in groups]


def train_stage(
    model: nn.Module,
    loss_fn: LossFn,
    dataset: Dataset,
    settings: TrainSettings,
    out_dir: Path | str,
    *,
    param_groups: list[dict] | None = None,
    collate_fn: Callable | None = None,
    resume: bool = False,
    progress: bool = True,
    sample_weights: Float[np.ndarray, " n"] | None = None,
    name: str = "train",
    evaluation: PeriodicEval | None = None,
    parallel: ParallelSettings | None = None,
) -> StageResult:
    """Train ``model`` for ``settings.steps`` optimizer steps; see the module docstring.

    ``param_groups`` are torch optimizer groups (``"params"``, optional ``"lr"``, ``"name"``,
    ``"weight_decay"``); ``None`` trains every parameter with ``requires_grad``. ``resume``
    continues from the newest checkpoint in ``out_dir`` (or starts fresh when there is none); a
    fresh start refuses an ``out_dir`` that already holds checkpoints. ``sample_weights`` (one per
    sample) switches the sampler to weighted draws with replacement. ``evaluation`` evaluates
    periodically, keeps the best weights and may stop early (f1kit.train.evaluation); the result's
    ``steps`` is then the step it stopped at. ``parallel`` chooses DDP (default) or FSDP / HSDP
    sharding over the ranks (f1kit.train.parallel): a sharded stage trains a sharded copy on
    this rank's device, checkpoints DCP shards, and leaves the trained weights in ``model``.

    Example::

        def loss_fn(model, batch, generator):
            loss = F.mse_loss(model(batch["x"]), batch["y"])
            return loss, {"mse": loss.item()}

        result = train_stage(model, loss_fn, dataset, TrainSettings(steps=100, batch_size=32), out)
    """
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings: expected TrainSettings, got {type(settings).__name__}")
    if isinstance(dataset, IterableDataset):
        raise TypeError("dataset: expected a map-style Dataset (len and indexing), got an iterable")
    wall_start = time.perf_counter()
    info = init_distributed()
    settings.local_batch_size(info.world_size)
    par = parallel if parallel is not None else ParallelSettings()
    out_dir = Path(out_dir)
    # Sharded over ranks: a sharded copy of the model trains (net), on this rank's device.
    sharded = par.shards_over(info.world_size)
    if sharded:
        module, net = sharded_replica(
            model,
            lambda m: LossModule(m, loss_fn),
            par,
            par.mesh(info.device, info.world_size),
            info.device,
            settings.precision,
        )
        device = info.device
    else:
        net, module, device = model, LossModule(model, loss_fn), model_device(model)
    optimizer = build_optimizer(net, settings, _groups_of(net, model, param_groups))
    scheduler = build_scheduler(optimizer, settings)

    # The main rank removes unfinished checkpoints and verifies (hashes) the candidates; the
    # others open the one it chose, checking sizes only.
    existing, problem = None, None
    if info.is_main:
        try:
            existing = load_latest(out_dir, clean=resume)
        except NoValidCheckpointError as err:
            problem = err
    chosen, message = all_gather_objects(
        (None if existing is None else existing.step, None if problem is None else str(problem))
    )[0]
    if message is not None:
        raise problem if problem is not None else NoValidCheckpointError(message)
    if not info.is_main and chosen is not None:
        try:
            existing = load_checkpoint(out_dir, chosen, hashes=False)
        except CheckpointError as err:  # reported by the check below, on every rank
            log.warning("rank %d: %s", info.rank, err)
    found = all_gather_objects(None if existing is None else existing.step)
    if len(set(found)) > 1:
        raise RuntimeError(
            f"out_dir: the ranks see different checkpoints {found} in {out_dir}; it must be on a"
            " filesystem that every rank shares"
        )
    if existing is not None and not resume:
        raise FileExistsError(
            f"out_dir: {out_dir} already holds checkpoint {existing.path.name}; pass resume=True"
            " to continue it or choose an empty directory"
        )
    tracker = None
    if evaluation is not None and info.is_main:
        tracker = EvalTracker(out_dir, evaluation, None if existing is None else existing.step)
    if existing is not None:
        start, sampler_state, prior_elapsed = restore(
            existing, net, optimizer, scheduler, info, settings, sharded
        )
        log.info("%s: resuming from %s (step %d)", name, existing.path, start)
        # Killed while evaluating: the main rank's records know; every rank learns (collective).
        pending = tracker is not None and tracker.due(start, settings.steps)
        pending = bool(all_gather_objects(pending and not tracker.done_at(start))[0])
        if sharded and pending:
            copy_back(net, model)  # (collective) the evaluation reads the whole model
        if pending:
            evaluate_on_main(tracker, start, model, existing.model_path, info, sharded)
        stopped = agree_to_stop(tracker, evaluation)
        if stopped:
            log.info("%s: stopped early at step %d (patience)", name, start)
        if start == settings.steps or stopped:
            if sharded and not pending:
                copy_back(net, model)
            return StageResult(
                start, float(existing.meta.get("loss", math.nan)), 0.0, existing.path,
                out_dir / "metrics.jsonl", resumed_from=start,
            )  # fmt: skip
    else:
        start, sampler_state, prior_elapsed = 0, None, 0.0
        seed_everything(derive_seed(settings.seed, GLOBAL_RNG, info.rank, 0))

    if info.world_size > 1 and not par.sharded:
        module = DistributedDataParallel(
            module,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=settings.find_unused_parameters,
        )
    net.train()
    if par.activation_checkpointing and not sharded:  # (a sharded copy has it switched on)
        set_checkpointing(model, True)
    sampler = ShardedBatchSampler(
        len(dataset),
        settings.batch_size,
        num_batches=settings.steps - start,
        world_size=info.world_size,
        rank=info.rank,
        seed=settings.seed,
        weights=sample_weights,
        state=sampler_state,
    )
    pin = device.type == "cuda"
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=settings.num_workers,
        pin_memory=pin,
        persistent_workers=False,
        worker_init_fn=seed_worker,
        # Seeds the workers' base seed without drawing from (and so shifting) the global RNG.
        generator=torch.Generator().manual_seed(
            derive_seed(settings.seed, LOADER_RNG, info.rank, start)
        ),
    )
    metrics = MetricsLog(out_dir, resume_step=start if existing else None) if info.is_main else None
    bar = StageProgress(name, settings.steps, start, progress and info.is_main)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = settings.grad_clip if settings.grad_clip is not None else math.inf
    generator = torch.Generator(device=device)
    local = settings.local_batch_size(info.world_size)
    draws = GlobalBatch(generator, info.rank * local, (info.rank + 1) * local, settings.batch_size)
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16"
    )
    stats = StepStats(device)
    last_loss = math.nan
    run_start = interval_start = time.perf_counter()
    interval_steps = 0
    done = start
    try:
        for k, batch in enumerate(loader):
            step = start + k
            batch = to_device(batch, device, non_blocking=pin)
            generator.manual_seed(derive_seed(settings.seed, 0, step))
            with autocast:
                loss, step_metrics = module(batch, draws)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if isinstance(grad_norm, DTensor):
                grad_norm = grad_norm.full_tensor()
            lrs = {f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups}
            optimizer.step()
            scheduler.step()
            stats.add(loss, step_metrics, grad_norm)
            interval_steps += 1
            done = step + 1
            evaluate_now = evaluation is not None and (
                done % evaluation.every == 0 or done == settings.steps
            )
            checkpoint_now = (
                done % settings.checkpoint_every == 0 or done == settings.steps or evaluate_now
            )
            record = None
            if done % settings.log_every == 0 or checkpoint_now:
                now = time.perf_counter()
                record = {"step": done, **stats.reduce(done), **lrs}
                record["samples_per_s"] = (
                    settings.batch_size * interval_steps / (now - interval_start)
                )
                record["elapsed_s"] = prior_elapsed + now - run_start
                interval_start, interval_steps = now, 0
                last_loss = record["loss"]
                if metrics is not None:
                    metrics.write(record)
            if checkpoint_now:
                trainer_state = {
                    "step": done,
                    "scheduler": scheduler.state_dict(),
                    "sampler": sampler.state_after(k + 1).as_dict(),
                    "rng": all_gather_objects(get_rng_state()),
                    "world_size": info.world_size,
                    "elapsed_s": prior_elapsed + time.perf_counter() - run_start,
                }
                meta = {
                    "name": name,
                    "steps": settings.steps,
                    "loss": last_loss,
                    "world_size": info.world_size,
                    "settings": asdict(settings),
                    "parallel": asdict(par),
                }
                if par.sharded:
                    export = done == settings.steps or evaluate_now
                    save_sharded_checkpoint(
                        out_dir, done, net, model, optimizer, trainer_state, meta, export
                    )
                elif info.is_main:
                    trainer_state["optimizer"] = optimizer.state_dict()
                    save_checkpoint(out_dir, done, model.state_dict(), trainer_state, meta)
                barrier()
            bar.advance(
                None if record is None else record["loss"],
                None if record is None else record["samples_per_s"],
            )
            if evaluate_now:
                weights = out_dir / "checkpoints" / step_name(done) / MODEL_FILE
                # (A sharded stage's checkpoint of this step gathered the weights into model.)
                evaluate_on_main(tracker, done, model, weights, info, sharded)
                if agree_to_stop(tracker, evaluation):
                    log.info("%s: stopped early at step %d (patience)", name, done)
                    break
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
        if par.activation_checkpointing and not sharded:
            set_checkpointing(model, False)
    # A sharded stage's last checkpoint (its end, or the evaluation it stopped at) exported the
    # whole model, gathering the trained weights into model: later stages and the policy read it.
    return StageResult(
        done,
        last_loss,
        time.perf_counter() - wall_start,
        out_dir / "checkpoints" / step_name(done),
        out_dir / "metrics.jsonl",
        resumed_from=start if existing else None,
    )


def _check_output(out: object) -> tuple[Tensor, dict]:
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise TypeError(f"loss_fn: expected (loss, metrics dict), got {type(out).__name__}")
    loss, step_metrics = out
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn: expected a scalar loss tensor, got {shape}")
    if not loss.requires_grad:
        raise ValueError("loss_fn: the loss does not require grad; nothing would train")
    return loss, step_metrics
