"""The one pre/post-processor of states and actions, shared by the training windows and the policy.

LeRobot's processor-pipeline convention (DESIGN.md s10): a `Processor` is a named list of steps,
each a dict -> dict map with a JSON config and (optionally) tensors, saved beside the policy as

    <dir>/<name>.json                                   {"name", "format", "steps": [...]}
    <dir>/<name>_step_<i>_<registry_name>.safetensors   the step's tensors (the statistics)

and loaded by `Processor.from_pretrained`. The policy has two: ``policy_preprocessor`` normalises
``observation.state`` (and, in training, ``action``); ``policy_postprocessor`` un-normalises
``action``. The training window (`f1kit.data.WindowedDataset`) normalises its samples with the very
same preprocessor, so both sides apply one rule: `flow.Normalizer` (``(x - center) / scale``, a
spread at or below 1e-6 replaced by 1 so a constant dimension maps to 0).

Statistics are kept per embodiment (one per dataset): a batch names its embodiment under the
``embodiment`` key; a processor with one embodiment uses it when the key is absent, one with several
refuses the batch and lists the valid ids. Mode ``identity`` leaves a feature as it is.
Non-finite statistics are refused with the file and key that hold them.
"""

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from f1kit.data.lerobot_layout import STATS_PATH
from f1kit.data.reader import RobotDataset
from flow import Normalizer, unpad

FORMAT = "f1kit.processor/1"
EMBODIMENT = "embodiment"
STATE, ACTION = "observation.state", "action"
PREPROCESSOR, POSTPROCESSOR = "policy_preprocessor", "policy_postprocessor"
MODES = ("mean_std", "min_max", "quantile", "identity")


class ProcessorError(ValueError):
    """A processor config, statistics file or batch that cannot be processed."""


def feature_normalizer(stats: Mapping[str, Any], mode: str, *, source: str) -> Normalizer | None:
    """`flow.Normalizer` of one feature's LeRobot stats (None for ``identity``); ``source`` (e.g.
    ``"<root>/meta/stats.json: action"``) names the feature in every error."""
    if mode not in MODES:
        raise ProcessorError(f"{source}: normalization mode expected one of {MODES}, got {mode!r}")
    if mode == "identity":
        return None
    flat = {
        k: torch.from_numpy(np.asarray(v, dtype=np.float64).reshape(-1))
        for k, v in stats.items()
        if k != "count"
    }
    try:
        return Normalizer.from_stats(flat, mode)  # type: ignore[arg-type]
    except ValueError as err:
        raise ProcessorError(f"{source}: {err}") from err


def embodiment_ids(datasets: Sequence[RobotDataset]) -> list[str]:
    """One id per dataset: its ``robot_type`` (info.json) or else its directory name, with
    ``#<index>`` appended where two datasets would share an id."""
    names = [str(ds.info.get("robot_type") or ds.root.name) for ds in datasets]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


class ProcessorStep(ABC):
    """One dict -> dict map of a `Processor`, with a JSON config and tensors to save."""

    registry_name: ClassVar[str]

    @abstractmethod
    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]: ...

    @abstractmethod
    def get_config(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any], tensors: dict[str, Tensor]) -> "ProcessorStep": ...

    def to(self, device: torch.device | str) -> "ProcessorStep":
        return self


class NormalizeStep(ProcessorStep):
    """Normalises each feature in ``modes`` present in the batch with the statistics of the
    batch's embodiment (``inverse=False``), or un-normalises it (``inverse=True``, cutting a padded
    action to the statistics' dims first)."""

    registry_name = "normalizer_processor"
    inverse: ClassVar[bool] = False

    def __init__(
        self, modes: Mapping[str, str], stats: Mapping[str, Mapping[str, Normalizer | None]]
    ) -> None:
        if not stats:
            raise ProcessorError("embodiments: expected statistics of at least one embodiment")
        for key, mode in modes.items():
            if mode not in MODES:
                raise ProcessorError(f"{key}: mode expected one of {MODES}, got {mode!r}")
        for emb, per_feature in stats.items():
            missing = sorted(set(modes) - set(per_feature))
            if missing:
                raise ProcessorError(f"embodiment {emb!r}: no statistics for {missing}")
        self.modes = dict(modes)
        self.stats = {emb: dict(per_feature) for emb, per_feature in stats.items()}

    @property
    def embodiments(self) -> list[str]:
        return list(self.stats)

    def embodiment(self, batch: Mapping[str, Any]) -> str:
        """The batch's embodiment id: ``batch['embodiment']``, or the only one there is."""
        emb = batch.get(EMBODIMENT)
        if emb is None:
            if len(self.stats) == 1:
                return next(iter(self.stats))
            raise ProcessorError(
                f"{EMBODIMENT}: this policy holds statistics of {len(self.stats)} embodiments; "
                f"say which with one of {self.embodiments}"
            )
        if not isinstance(emb, str):
            raise ProcessorError(f"{EMBODIMENT}: expected a str id, got {type(emb).__name__}")
        if emb not in self.stats:
            raise ProcessorError(f"{EMBODIMENT}: expected one of {self.embodiments}, got {emb!r}")
        return emb

    def normalizer(self, embodiment: str, key: str) -> Normalizer | None:
        return self.stats[embodiment][key]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        emb = self.embodiment(batch)
        out = dict(batch)
        for key in self.modes:
            norm = self.stats[emb][key]
            if key not in out or norm is None:
                continue
            x = out[key]
            if x.shape[-1] < norm.dim or (x.shape[-1] > norm.dim and not self.inverse):
                raise ProcessorError(
                    f"{key}: expected {norm.dim} features (embodiment {emb!r}), got {x.shape[-1]}"
                )
            if self.inverse:
                out[key] = norm.inverse(unpad(x, norm.dim))
            else:
                out[key] = norm(x)
        return out

    def get_config(self) -> dict[str, Any]:
        return {"modes": dict(self.modes), "embodiments": self.embodiments}

    def state_dict(self) -> dict[str, Tensor]:
        tensors = {}
        for emb, per_feature in self.stats.items():
            for key, norm in per_feature.items():
                if norm is not None:
                    tensors[f"{emb}/{key}/center"] = norm.center.detach().cpu()
                    tensors[f"{emb}/{key}/scale"] = norm.scale.detach().cpu()
        return tensors

    @classmethod
    def from_config(cls, config: dict[str, Any], tensors: dict[str, Tensor]) -> "NormalizeStep":
        unknown = sorted(set(config) - {"modes", "embodiments"})
        if unknown:
            raise ProcessorError(f"config: unknown keys {unknown} (expected modes, embodiments)")
        modes, stats = config["modes"], {}
        for emb in config["embodiments"]:
            stats[emb] = {}
            for key, mode in modes.items():
                if mode == "identity":
                    stats[emb][key] = None
                    continue
                names = [f"{emb}/{key}/center", f"{emb}/{key}/scale"]
                missing = [n for n in names if n not in tensors]
                if missing:
                    raise ProcessorError(f"statistics: missing {missing}")
                try:  # the Normalizer refuses NaN / inf and non-positive scales
                    stats[emb][key] = Normalizer(tensors[names[0]], tensors[names[1]], mode)
                except ValueError as err:
                    raise ProcessorError(f"statistics {names}: {err}") from err
        return cls(modes, stats)

    def to(self, device: torch.device | str) -> "NormalizeStep":
        for per_feature in self.stats.values():
            for norm in per_feature.values():
                if norm is not None:
                    norm.to(device)
        return self


class UnnormalizeStep(NormalizeStep):
    """`NormalizeStep` run backwards: model outputs back to the data's units."""

    registry_name = "unnormalizer_processor"
    inverse = True


PROCESSOR_STEPS: dict[str, type[ProcessorStep]] = {
    step.registry_name: step for step in (NormalizeStep, UnnormalizeStep)
}


class Processor:
    """A named pipeline of steps applied in order to a batch dict (LeRobot's processor pipeline).

    Example::

        pre, post = make_processors(datasets, state_key="observation.state", action_key="action")
        state = pre({"observation.state": raw_state, "embodiment": "sawyer"})["observation.state"]
        actions = post({"action": model_actions, "embodiment": "sawyer"})["action"]
        pre.save_pretrained("runs/f1/policy")        # policy_preprocessor.json + statistics
        pre = Processor.from_pretrained("runs/f1/policy", PREPROCESSOR)
    """

    def __init__(self, steps: Sequence[ProcessorStep], name: str) -> None:
        self.steps = list(steps)
        self.name = name

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        for step in self.steps:
            batch = step(batch)
        return batch

    def step(self, kind: type[ProcessorStep]) -> ProcessorStep:
        """The first step of type ``kind``."""
        for step in self.steps:
            if isinstance(step, kind):
                return step
        raise ProcessorError(f"{self.name}: has no {kind.registry_name} step")

    def to(self, device: torch.device | str) -> "Processor":
        for step in self.steps:
            step.to(device)
        return self

    def files(self) -> list[str]:
        """The file names `save_pretrained` writes."""
        return [f"{self.name}.json"] + [
            self._state_file(i, s) for i, s in enumerate(self.steps) if s.state_dict()
        ]

    def _state_file(self, index: int, step: ProcessorStep) -> str:
        return f"{self.name}_step_{index}_{step.registry_name}.safetensors"

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``<name>.json`` and each step's tensors into ``directory`` (which exists; the
        policy's writer makes it a temporary directory renamed into place)."""
        directory = Path(directory)
        entries = []
        for i, step in enumerate(self.steps):
            entry: dict[str, Any] = {
                "registry_name": step.registry_name,
                "config": step.get_config(),
            }
            tensors = step.state_dict()
            if tensors:
                entry["state_file"] = self._state_file(i, step)
                save_file(tensors, str(directory / entry["state_file"]))
            entries.append(entry)
        config = {"name": self.name, "format": FORMAT, "steps": entries}
        (directory / f"{self.name}.json").write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, name: str) -> "Processor":
        """The processor ``name`` saved in ``directory``; every problem names its file."""
        directory = Path(directory)
        path = directory / f"{name}.json"
        if not path.is_file():
            raise ProcessorError(f"{path}: not found (the policy's {name} is missing)")
        config = json.loads(path.read_text())
        if config.get("format") != FORMAT:
            raise ProcessorError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
        steps = []
        for i, entry in enumerate(config.get("steps", [])):
            kind = PROCESSOR_STEPS.get(entry.get("registry_name"))
            if kind is None:
                raise ProcessorError(
                    f"{path}: steps[{i}].registry_name expected one of {sorted(PROCESSOR_STEPS)}, "
                    f"got {entry.get('registry_name')!r}"
                )
            tensors: dict[str, Tensor] = {}
            if "state_file" in entry:
                state = directory / entry["state_file"]
                if not state.is_file():
                    raise ProcessorError(f"{state}: not found (steps[{i}] of {path})")
                tensors = load_file(str(state))
            try:
                steps.append(kind.from_config(entry.get("config", {}), tensors))
            except (ProcessorError, KeyError, TypeError) as err:
                raise ProcessorError(f"{path}: steps[{i}]: {err}") from err
        return cls(steps, name)


def make_processors(
    datasets: Sequence[RobotDataset],
    *,
    state_key: str = STATE,
    action_key: str = ACTION,
    mode: str = "mean_std",
    embodiments: Sequence[str] | None = None,
) -> tuple[Processor, Processor]:
    """The policy's preprocessor and postprocessor from each dataset's ``meta/stats.json``.

    The features are named ``observation.state`` and ``action`` whatever the datasets call them
    (``state_key``, ``action_key``); ``embodiments`` (one id per dataset) default to
    `embodiment_ids`.
    """
    if mode not in MODES:
        raise ProcessorError(f"normalization: expected one of {MODES}, got {mode!r}")
    ids = list(embodiments) if embodiments is not None else embodiment_ids(datasets)
    if len(ids) != len(datasets) or len(set(ids)) != len(ids):
        raise ProcessorError(
            f"embodiments: expected {len(datasets)} distinct ids (one per dataset), got {ids}"
        )
    stats = {}
    for emb, ds in zip(ids, datasets, strict=True):
        stats[emb] = {}
        for name, key in ((STATE, state_key), (ACTION, action_key)):
            source = f"{ds.root / STATS_PATH}: {key}"
            if key not in ds.stats:
                raise ProcessorError(f"{source}: no statistics for this feature")
            stats[emb][name] = feature_normalizer(ds.stats[key], mode, source=source)
    modes = {STATE: mode, ACTION: mode}
    pre = Processor([NormalizeStep(modes, stats)], PREPROCESSOR)
    actions = {emb: {ACTION: per_feature[ACTION]} for emb, per_feature in stats.items()}
    post = Processor([UnnormalizeStep({ACTION: mode}, actions)], POSTPROCESSOR)
    return pre, post
