"""The stage sections, one per ``kind``: ``tokenizer`` (the VQ-VAE), ``train`` (one F1 training
stage), ``evaluate`` (closed-loop Meta-World); each has its runner in `f1kit.recipe.stages`."""

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from f1kit.model import F1Config, Objective
from f1kit.recipe.evaluation_config import StageEvaluation
from f1kit.recipe.fields import (
    Count,
    Expert,
    Name,
    NonNegative,
    Problems,
    Rate,
    Real,
    Section,
    Weight,
    check_tasks,
)
from f1kit.recipe.optimization import OptimizerConfig, ScheduleConfig
from f1kit.recipe.schema.data import DataConfig, Weighting
from f1kit.recipe.schema.init import InitFrom
from f1kit.sim import INSTRUCTIONS, EvalConfig, resolve_tasks
from f1kit.train import TrainSettings
from foresight import TokenizerTrainConfig

EXPERTS = ("understanding", "generation", "action")
STAGE_KINDS = ("tokenizer", "train", "evaluate")


def _stage_seed(seed: int | None, recipe_seed: int, index: int) -> int:
    return seed if seed is not None else recipe_seed + index


class TokenizerStage(Section):
    """Train the multi-scale VQ-VAE on the generation camera's frames (`train_tokenizer`)."""

    kind: Literal["tokenizer"]
    name: Name
    steps: Count
    batch_size: Count
    lr: Rate = 2e-4
    seed: NonNegative | None = None
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    vq_weight: Weight = 1.0
    grad_clip: Rate | None = 1.0
    dead_code_threshold: Weight | None = 0.5
    restart_every: Count = 25
    kmeans_init_rounds: NonNegative = 0

    def train_config(self, recipe_seed: int, index: int) -> TokenizerTrainConfig:
        """The tokenizer trainer's settings; seed None = recipe seed + stage index."""
        return TokenizerTrainConfig(
            steps=self.steps,
            lr=self.lr,
            seed=_stage_seed(self.seed, recipe_seed, index),
            betas=self.optimizer.betas,
            weight_decay=self.optimizer.weight_decay,
            vq_weight=self.vq_weight,
            grad_clip=self.grad_clip,
            dead_code_threshold=self.dead_code_threshold,
            restart_every=self.restart_every,
            kmeans_init_rounds=self.kmeans_init_rounds,
        )


class TrainStage(Section):
    """One F1 training stage (align, pretrain, post-train): which experts train (the rest are
    frozen), which losses with which weights, how many foresight scales, and the optimisation
    numbers. It starts from the previous stage's weights. ``scales``: a stage without an action
    loss teacher-forces that many scales (null = all, stage I); a stage with one trains on the
    ``model.generation.scales`` that inference generates (null = those; another count is an
    error), its actions reading foresight the model draws itself (docs/contract.md).
    ``data`` names the datasets it reads (a group of ``data.groups``: the paper's large mixture
    for stages I-II, the target data for stage III), ``tasks`` a subset of tasks within them,
    ``weighting`` how often each window is drawn (`f1kit.recipe.stages.sample_weights`).
    ``init_from``: a model directory the stage starts from (schema/init.py)."""

    kind: Literal["train"]
    name: Name
    train: list[Expert] = Field(min_length=1)
    losses: dict[Literal["generation", "action"], Weight]
    scales: Count | None = None
    data: Name | None = None  # a group of data.groups: the datasets it reads (None = all)
    tasks: list[str] | None = None  # a subset of data.tasks within them (None = all)
    weighting: Weighting | None = None  # how often each window is drawn (None = data.weighting)
    steps: Count | None = None
    epochs: Annotated[Real, Field(gt=0)] | None = None  # instead of steps: passes over its data
    batch_size: Count
    lr: dict[Expert, Rate]
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    grad_clip: Rate | None = 1.0
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: NonNegative | None = None
    checkpoint_every: Count = 200
    log_every: Count = 10
    num_workers: NonNegative = 0
    # Evaluation during the stage, the best weights kept, early stopping (evaluation_config.py).
    evaluate: StageEvaluation | None = None
    # Weights this stage starts from instead of the previous stage's (schema/init.py).
    init_from: InitFrom | None = None
    # A stage that freezes the Understanding expert (aligns against it) refuses a U that no
    # init_from filled and no earlier stage trained, unless this says a random U is intended.
    allow_random_understanding: bool = False

    def task_sentences(self) -> set[str] | None:
        """The instructions of ``tasks`` as the data stores them (Meta-World names map to their
        sentences; other datasets name tasks by their text); None = all the data's tasks."""
        if self.tasks is None:
            return None
        return {INSTRUCTIONS.get(t, t) for t in self.tasks}

    @model_validator(mode="after")
    def _consistent(self) -> "TrainStage":
        problems = []
        if len(set(self.train)) != len(self.train):
            problems.append(("train", f"an expert is listed twice in {self.train}"))
        if not any(w > 0 for w in self.losses.values()):
            problems.append(
                (
                    "losses",
                    f"at least one of generation/action needs a weight > 0, got "
                    f"{dict(self.losses)}",
                )
            )
        if "action" in self.train and self.losses.get("action", 0.0) == 0:
            problems.append(
                (
                    "losses.action",
                    "the action expert is trained but its loss weight is 0 (the "
                    "action tokens then leave the pass and it gets no gradient); give it a weight "
                    "> 0 or remove action from train",
                )
            )
        missing = [e for e in dict.fromkeys(self.train) if e not in self.lr]
        extra = [e for e in self.lr if e not in self.train]
        if missing or extra:
            problems.append(
                (
                    "lr",
                    f"expected one learning rate per trained expert {self.train}; "
                    + (f"missing {missing}" if missing else "")
                    + ("; " if missing and extra else "")
                    + (f"{extra} are not trained in this stage" if extra else ""),
                )
            )
        if (self.steps is None) == (self.epochs is None):
            problems.append(
                (
                    "steps",
                    "give exactly one of steps (optimizer steps) or epochs (passes over the "
                    f"stage's data), got steps={self.steps}, epochs={self.epochs}",
                )
            )
        elif self.steps is not None and self.schedule.warmup_steps > self.steps:
            problems.append(
                (
                    "schedule.warmup_steps",
                    f"{self.schedule.warmup_steps} exceeds the stage's {self.steps} steps",
                )
            )
        if problems:
            raise Problems(problems)
        return self

    def objective(self, model: F1Config) -> Objective:
        """What each step optimises (scales null in an acting stage = the inference scales)."""
        action = self.losses.get("action", 0.0)
        scales = self.scales
        if scales is None and action > 0 and model.generation is not None:
            scales = model.generation.scales
        return Objective(
            generation=self.losses.get("generation", 0.0), action=action, scales=scales
        )

    def total_steps(self, samples: int) -> int:
        """Optimizer steps: ``steps``, or ``epochs`` passes over ``samples`` training windows."""
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None  # the validator demands one of them
        return max(1, math.ceil(self.epochs * samples / self.batch_size))

    def settings(self, recipe_seed: int, index: int, samples: int | None = None) -> TrainSettings:
        """The trainer's numbers; seed None = recipe seed + stage index; ``samples``: the
        stage's training windows (needed when the stage counts epochs).

        Every expert's lr comes from ``lr`` through `F1.param_groups`; TrainSettings' own ``lr``
        (for groups without one) is set to the largest of them and is never used by F1's groups.
        """
        if self.steps is None and samples is None:
            raise ValueError(f"stage {self.name!r} counts epochs: pass its number of samples")
        return TrainSettings(
            steps=self.total_steps(samples or 0),
            batch_size=self.batch_size,
            lr=max(self.lr.values()),
            betas=self.optimizer.betas,
            weight_decay=self.optimizer.weight_decay,
            warmup_steps=self.schedule.warmup_steps,
            schedule=self.schedule.kind,
            min_lr_ratio=self.schedule.min_lr_ratio,
            grad_clip=self.grad_clip,
            precision=self.precision,
            seed=_stage_seed(self.seed, recipe_seed, index),
            checkpoint_every=self.checkpoint_every,
            log_every=self.log_every,
            num_workers=self.num_workers,
            # U's last-layer attention output, post-norm and MLP and its final norm never get
            # a gradient (no loss reads U's final hidden states; the official layout keeps
            # them). DDP must be told; every other trained parameter is reached.
            find_unused_parameters="understanding" in self.train,
        )


class EvalStage(Section):
    """Closed-loop Meta-World evaluation of the policy trained so far, on held-out layouts."""

    kind: Literal["evaluate"]
    name: Name
    tasks: list[str] | str | None = None
    episodes: Count = 10
    max_steps: Count = 200
    seed: NonNegative = 10_000
    record: NonNegative = 1
    decode_foresight: bool | None = None
    # Which embodiment's statistics the simulator's observations use (the policy's processor
    # holds one per dataset); null = the only one, an error when the data has several.
    embodiment: str | None = None

    check_tasks = field_validator("tasks")(check_tasks)

    @model_validator(mode="after")
    def _record_within_episodes(self) -> "EvalStage":
        if self.record > self.episodes:
            raise Problems([("record", f"{self.record} videos exceed episodes {self.episodes}")])
        return self

    def eval_config(self, data: DataConfig, video_dir: Path | str | None = None) -> EvalConfig:
        """The evaluation loop's settings; tasks None = ``data.tasks``, cameras and image size
        as in training. ``video_dir`` is where the ``record`` rollouts go (needed when > 0)."""
        return EvalConfig(
            tasks=resolve_tasks(self.tasks if self.tasks is not None else data.tasks),
            episodes=self.episodes,
            max_steps=self.max_steps,
            seed=self.seed,
            cameras=tuple(data.cameras),
            size=data.image_size,
            record=self.record,
            video_dir=video_dir,
        )

    def decodes_foresight(self, model: F1Config) -> bool:
        """Whether videos show the decoded foresight; None = whenever the model has G."""
        if self.decode_foresight is None:
            return model.generation is not None
        return self.decode_foresight


Stage = Annotated[TokenizerStage | TrainStage | EvalStage, Field(discriminator="kind")]
