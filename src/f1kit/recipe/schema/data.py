"""The ``data:`` section: where training windows come from (generated Meta-World demos or local
LeRobot datasets) and what one window holds."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from f1kit.data import WindowConfig
from f1kit.recipe.fields import Count, Int, Name, NonNegative, Problems, Section, check_tasks
from f1kit.sim import CAMERAS, DemoConfig, resolve_tasks

# Meta-World v3's proprio state (hand xyz, gripper) and action (delta xyz, gripper) widths.
METAWORLD_STATE_DIM = METAWORLD_ACTION_DIM = 4
# How often a train stage draws each window (f1kit.recipe.stages.train_data.sample_weights).
Weighting = Literal["uniform", "task", "pi0"]


class DataConfig(Section):
    """Where training windows come from: generated Meta-World demos or local LeRobot datasets."""

    source: Literal["metaworld", "lerobot"] = "metaworld"
    tasks: list[str] | str = Field(default_factory=lambda: ["reach-v3"])
    episodes: Count = 30
    image_size: Annotated[Int, Field(ge=8, le=1024)] = 64
    cameras: list[str] = Field(default_factory=lambda: ["corner"], min_length=1)
    max_steps: Count = 200
    seed: NonNegative = 0
    workers: NonNegative = 1
    paths: list[str] = Field(default_factory=list)
    # Named subsets of ``paths`` (paths of that list) that a train stage reads (its ``data``).
    groups: dict[Name, Annotated[list[str], Field(min_length=1)]] = Field(default_factory=dict)
    history: list[Int] = Field(default_factory=lambda: [-9, -6, -3, 0])
    foresight: Count = 3
    chunk: Count = 4
    normalization: Literal["mean_std", "min_max", "quantile"] = "mean_std"
    weighting: Weighting = "task"
    # Held-out demo episodes per task (f1kit.data.split): never trained on; the tokenizer stage
    # scores its reconstructions on them. Meta-World generates them beyond ``episodes``.
    validation: NonNegative = 0
    # Frames in memory decoded (eager) or decoded when a sample asks (lazy, in the DataLoader's
    # workers); auto: lazy once the decoded frames would pass f1kit.data.reader.EAGER_LIMIT_BYTES.
    decode: Literal["auto", "eager", "lazy"] = "auto"

    check_tasks = field_validator("tasks")(check_tasks)

    @field_validator("history")
    @classmethod
    def _history(cls, value: list[int]) -> list[int]:
        WindowConfig(history=tuple(value))  # its rule and message: increasing offsets <= 0
        return value

    @model_validator(mode="after")
    def _source_rules(self) -> "DataConfig":
        problems = []
        if len(set(self.cameras)) != len(self.cameras):
            problems.append(("cameras", f"duplicate camera names in {self.cameras}"))
        if self.source == "metaworld":
            bad = [c for c in self.cameras if c not in CAMERAS]
            if bad:
                problems.append(
                    ("cameras", f"unknown Meta-World camera(s) {bad}; expected some of {CAMERAS}")
                )
            for key in ("paths", "groups"):
                if getattr(self, key):
                    problems.append(
                        (key, "only for source: lerobot (metaworld demos are generated)")
                    )
        else:
            if not self.paths:
                problems.append(("paths", "source lerobot needs at least one dataset root"))
            defaults = DataConfig.model_fields
            for key in ("tasks", "episodes", "max_steps", "workers"):
                # Compared by value, not by "was it written", so a resolved recipe reloads.
                if getattr(self, key) != defaults[key].get_default(call_default_factory=True):
                    problems.append((key, "demo generation setting, only for source: metaworld"))
            problems += self._group_problems()
        if problems:
            raise Problems(problems)
        return self

    def _group_problems(self) -> list[tuple[str, str]]:
        known = [Path(p) for p in self.paths]
        problems = []
        for name, members in self.groups.items():
            for j, path in enumerate(members):
                if Path(path) not in known:
                    problems.append(
                        (
                            f"groups.{name}.{j}",
                            f"{path!r} is not in data.paths {self.paths}; a group names "
                            "datasets of data.paths",
                        )
                    )
                elif Path(path) in [Path(p) for p in members[:j]]:
                    problems.append((f"groups.{name}.{j}", f"{path!r} is listed twice"))
        return problems

    def group_datasets(self, group: str | None) -> list[int] | None:
        """The indices into ``paths`` of ``group``'s datasets (None: every dataset)."""
        if group is None:
            return None
        if group not in self.groups:
            raise KeyError(f"data.groups: no group {group!r}; groups are {sorted(self.groups)}")
        members = {Path(p) for p in self.groups[group]}
        return [i for i, p in enumerate(self.paths) if Path(p) in members]

    @property
    def task_names(self) -> tuple[str, ...]:
        return resolve_tasks(self.tasks)

    @property
    def image_keys(self) -> tuple[str, ...]:
        return tuple(f"observation.images.{c}" for c in self.cameras)

    def demo_config(self) -> DemoConfig:
        """The expert-demo generation this section describes (source ``metaworld``)."""
        if self.source != "metaworld":
            raise ValueError(f"data.source: demos are generated for metaworld, not {self.source}")
        return DemoConfig(
            tasks=self.task_names,
            episodes=self.episodes + self.validation,
            cameras=tuple(self.cameras),
            size=self.image_size,
            max_steps=self.max_steps,
            seed=self.seed,
            workers=self.workers,
        )

    def window_config(self) -> WindowConfig:
        """What one training sample holds: history frames, foresight offset, action chunk."""
        return WindowConfig(
            history=tuple(self.history),
            foresight=self.foresight,
            chunk=self.chunk,
            image_keys=self.image_keys,
            normalization=self.normalization,
        )
