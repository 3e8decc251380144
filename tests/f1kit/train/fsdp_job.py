"""One post-train-like stage of a micro F1, run in-process or as one rank of a gloo group.

``python fsdp_job.py OUT STRATEGY [SHARD_SIZE] [--ac] [--resume] [--eval] [--bf16]
[--shapes-only]`` is what each rank of the sharded tests runs (the torchrun variables set by the
test); `run_job` is the same stage in the test process. The Understanding expert is frozen (as
in stage I), so the tests can check frozen weights stay untouched; the action padding differs
per sample, so a split batch's loss must be normalised over the whole batch to match one process.
"""

import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository: `tests.` imports

from f1kit.model.loading import build_empty
from f1kit.train import ParallelSettings, StageResult, TrainSettings, train_stage
from f1kit.train.evaluation import PeriodicEval
from tests.f1kit.model.helpers import micro_config, micro_model, random_batch

SAMPLES, STEPS = 16, 6
SETTINGS = dict(steps=STEPS, batch_size=4, lr=1e-3, checkpoint_every=2, log_every=1, seed=3)


class Windows(Dataset):
    """``SAMPLES`` random micro-F1 training samples, some with padded action steps."""

    def __init__(self) -> None:
        batch = random_batch(SAMPLES, seed=1)
        batch["action_is_pad"][::3, 2:] = True  # 1 of 3 real steps padded in every third sample
        batch["action_is_pad"][1::5, 1:] = True
        self.batch = batch

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.batch.items()}


def loss_fn(model, batch, draws):
    return model(batch, draws, objective=OBJECTIVE)


def _objective():
    from f1kit.model import Objective

    return Objective(action=1.0, generation=0.1)


OBJECTIVE = _objective()


def build(shapes_only: bool = False, train_all: bool = False):
    """The micro F1 (seed 0) with Understanding frozen (``train_all``: not); ``shapes_only``: on
    the meta device, as a sharded recipe run builds it on every rank but the main one."""
    model = build_empty(micro_config()) if shapes_only else micro_model(seed=0)
    model.set_trainable(model.experts if train_all else ["generation", "action"])
    return model


def weight_norm(model: torch.nn.Module) -> dict[str, float]:
    """The evaluation: a score of the whole model the main rank holds (its trained weights)."""
    return {"weight_norm": float(sum(p.detach().double().norm() for p in model.parameters()))}


def run_job(
    out: Path,
    parallel: ParallelSettings,
    resume: bool = False,
    evaluate: bool = False,
    precision: str = "fp32",
    shapes_only: bool = False,
    train_all: bool = False,
):
    torch.set_num_threads(1)
    model = build(shapes_only, train_all)
    evaluation = None
    if evaluate:  # every 2 steps, as the checkpoints: a resume starts at an evaluation step
        evaluation = PeriodicEval(
            every=2, run=lambda step: weight_norm(model), select="weight_norm"
        )
    result: StageResult = train_stage(
        model,
        loss_fn,
        Windows(),
        TrainSettings(**SETTINGS, precision=precision),
        out,
        resume=resume,
        progress=False,
        parallel=parallel,
        evaluation=evaluation,
    )
    return model, result


if __name__ == "__main__":
    from f1kit.train import init_distributed, is_main, shutdown_distributed

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out, strategy = Path(args[0]), args[1]
    shard_size = int(args[2]) if len(args) > 2 else None
    init_distributed()
    parallel = ParallelSettings(
        strategy=strategy, shard_size=shard_size, activation_checkpointing="--ac" in sys.argv
    )
    precision = "bf16" if "--bf16" in sys.argv else "fp32"
    shapes_only = "--shapes-only" in sys.argv and not is_main()  # rank 0 alone holds weights
    model, _ = run_job(
        out, parallel, "--resume" in sys.argv, "--eval" in sys.argv, precision, shapes_only
    )
    if is_main():  # the trained weights every rank got back, for the test to compare
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "final.st")
    shutdown_distributed()
