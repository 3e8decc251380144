"""F1's training window over one or more LeRobot-format datasets (DESIGN.md s3-s4).

A sample at dataset row ``i`` (frame ``f`` of its episode, ``[lo, hi)`` its rows):

* ``images`` uint8 ``(v, 3, H, W)``: the current frame of each of the ``v`` cameras,
* ``history`` uint8 ``(t, v, 3, H, W)`` at frame offsets ``history`` (default -9, -6, -3, 0), each
  clamped into the episode; ``history_is_pad`` bool ``(t,)`` marks the clamped ones,
* ``foresight`` uint8 ``(v, 3, H, W)``: the foresight target at ``+foresight`` (default 3),
  clamped to the last frame; ``foresight_is_pad`` bool ``()``,
* ``state`` float32 ``(s,)`` and ``action`` float32 ``(c, a)`` normalised by ``preprocessor`` (the
  policy's, `f1kit.data.processor`) with the sample's own dataset statistics; actions at
  ``f..f+c-1``, past the episode end repeated from the last action
  with ``action_is_pad`` bool ``(c,)`` set,
* ``task`` (instruction string), ``task_index`` (over all datasets' tasks), ``dataset_index``,
  ``embodiment`` (the dataset's id in the processor), ``index`` (row in its dataset).

Given precomputed tokenizer codes per row (``codes=``, the frozen tokenizer's pyramid of the
generation camera), ``history_codes`` int64 ``(t, N)`` and ``foresight_codes`` ``(N,)`` replace the
history and foresight frames: a training step then never runs the tokenizer.

Frames come from the readers' in-memory uint8 caches, so a sample costs a few array gathers.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from einops import rearrange
from jaxtyping import UInt8
from torch.utils.data import Dataset

from f1kit.data.processor import ACTION, EMBODIMENT, MODES, STATE, make_processors
from f1kit.data.reader import RobotDataset


@dataclass(frozen=True)
class WindowConfig:
    """Which frames, state and actions one training sample holds."""

    history: tuple[int, ...] = (-9, -6, -3, 0)
    foresight: int = 3
    chunk: int = 4
    state_key: str = "observation.state"
    action_key: str = "action"
    image_keys: tuple[str, ...] | None = None
    normalization: str = "mean_std"  # mean_std, min_max, quantile or identity

    def __post_init__(self) -> None:
        h = self.history
        if not h or any(o > 0 for o in h) or list(h) != sorted(set(h)):
            raise ValueError(
                f"history: expected increasing offsets <= 0 like (-9, -6, -3, 0), got {h}"
            )
        if self.foresight < 1:
            raise ValueError(
                f"foresight: expected an offset >= 1 frame ahead, got {self.foresight}"
            )
        if self.chunk < 1:
            raise ValueError(f"chunk: expected an action chunk length >= 1, got {self.chunk}")
        if self.normalization not in MODES:
            raise ValueError(f"normalization: expected one of {MODES}, got {self.normalization!r}")


class WindowedDataset(Dataset):
    """Windowed samples over several datasets, each normalised with its own statistics.

    Example::

        data = WindowedDataset([read_dataset("out/mt10")], WindowConfig(chunk=4))
        sampler = WeightedGroupSampler(data.groups("task"), mode="power", seed=0)
        loader = DataLoader(data, batch_size=32, sampler=sampler)
    """

    def __init__(
        self,
        datasets: RobotDataset | Sequence[RobotDataset],
        config: WindowConfig,
        codes: Sequence[np.ndarray] | None = None,
        embodiments: Sequence[str] | None = None,
    ) -> None:
        self.datasets = [datasets] if isinstance(datasets, RobotDataset) else list(datasets)
        # Precomputed tokenizer codes per dataset row ([rows, N] per dataset): samples then carry
        # ``history_codes`` / ``foresight_codes`` instead of the history and foresight frames.
        self.codes = None if codes is None else [np.asarray(c) for c in codes]
        if self.codes is not None:
            if len(self.codes) != len(self.datasets):
                raise ValueError(
                    f"codes: expected one array per dataset ({len(self.datasets)}), "
                    f"got {len(self.codes)}"
                )
            for d, (c, ds) in enumerate(zip(self.codes, self.datasets, strict=True)):
                if c.ndim != 2 or c.shape[0] != len(ds):
                    raise ValueError(
                        f"codes[{d}]: expected [{len(ds)} rows, N], got {list(c.shape)}"
                    )
        if not self.datasets:
            raise ValueError("datasets: expected at least one dataset, got none")
        self.config = config
        first = self.datasets[0]
        self.image_keys = config.image_keys if config.image_keys is not None else first.image_keys
        shapes = None
        for d, ds in enumerate(self.datasets):
            for key in (config.state_key, config.action_key):
                if key not in ds.numeric:
                    raise ValueError(f"dataset {d} ({ds.root}): no numeric feature {key!r}")
            missing = [k for k in self.image_keys if k not in ds.image_keys]
            if missing:
                raise ValueError(f"dataset {d} ({ds.root}): missing cameras {missing}")
            dims = [ds.numeric[config.state_key].shape[1], ds.numeric[config.action_key].shape[1]]
            dims += [tuple(ds.info["features"][k]["shape"]) for k in self.image_keys]
            if shapes is not None and dims != shapes:
                raise ValueError(
                    f"dataset {d}: state/action/image shapes {dims} != dataset 0's {shapes}"
                )
            shapes = dims
        self.tasks: list[str] = []
        self._task_maps = []
        for ds in self.datasets:
            local = []
            for task in ds.tasks:
                if task not in self.tasks:
                    self.tasks.append(task)
                local.append(self.tasks.index(task))
            self._task_maps.append(np.asarray(local, dtype=np.int64))
        # The policy's own pre/post-processor (saved with it): one normalisation rule, and the
        # statistics of each dataset under its embodiment id.
        self.preprocessor, self.postprocessor = make_processors(
            self.datasets,
            state_key=config.state_key,
            action_key=config.action_key,
            mode=config.normalization,
            embodiments=embodiments,
        )
        self.embodiments: list[str] = self.preprocessor.steps[0].embodiments  # type: ignore[attr-defined]
        self._offsets = np.cumsum([0] + [len(ds) for ds in self.datasets])
        # Episode row range of every row, per dataset.
        self._ranges = []
        for ds in self.datasets:
            lengths = ds.episode_bounds[:, 1] - ds.episode_bounds[:, 0]
            self._ranges.append(np.repeat(ds.episode_bounds, lengths, axis=0))

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """(dataset index, row in that dataset) of global sample ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"index: expected 0 <= i < {len(self)}, got {i}")
        d = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return d, i - int(self._offsets[d])

    def frames_at(self, i: int, key: str, offsets: Sequence[int]) -> UInt8[np.ndarray, "t H W 3"]:
        """Camera ``key``'s frames at ``offsets`` steps from sample ``i``, clipped to its episode
        (as the window's history and foresight frames are)."""
        d, row = self.locate(int(i))
        lo, hi = (int(x) for x in self._ranges[d][row])
        rows = np.clip(row + np.asarray(offsets, dtype=np.int64), lo, hi - 1)
        return self.datasets[d].frames(key, rows)

    def groups(self, by: Literal["task", "dataset"] = "task") -> np.ndarray:
        """Group id of every sample: its global task index or its dataset index."""
        if by == "task":
            return np.concatenate(
                [m[ds.task_index] for m, ds in zip(self._task_maps, self.datasets, strict=True)]
            )
        if by == "dataset":
            return np.repeat(np.arange(len(self.datasets)), [len(ds) for ds in self.datasets])
        raise ValueError(f"by: expected 'task' or 'dataset', got {by!r}")

    def _images(self, ds: RobotDataset, rows: np.ndarray) -> torch.Tensor:
        stack = np.stack([ds.frames(k, rows) for k in self.image_keys], axis=1)
        # Contiguous here: collating permuted uint8 views was 10x slower than the whole sample.
        return rearrange(torch.from_numpy(stack), "t v H W c -> t v c H W").contiguous()

    def __getitem__(self, i: int) -> dict[str, object]:
        d, row = self.locate(int(i))
        ds, cfg = self.datasets[d], self.config
        lo, hi = (int(x) for x in self._ranges[d][row])
        hist = row + np.asarray(cfg.history)
        ahead = row + cfg.foresight
        acts = row + np.arange(cfg.chunk)
        frame_rows = np.clip(np.r_[hist, row, ahead], lo, hi - 1)
        state = torch.from_numpy(ds.numeric[cfg.state_key][row])
        action = torch.from_numpy(ds.numeric[cfg.action_key][np.clip(acts, lo, hi - 1)])
        embodiment = self.embodiments[d]
        normed = self.preprocessor({STATE: state, ACTION: action, EMBODIMENT: embodiment})
        sample: dict[str, object] = {
            "history_is_pad": torch.from_numpy(hist < lo),
            "foresight_is_pad": torch.tensor(ahead >= hi),
            "state": normed[STATE],
            "action": normed[ACTION],
            "action_is_pad": torch.from_numpy(acts >= hi),
            "task": ds.tasks[int(ds.task_index[row])],
            "task_index": int(self._task_maps[d][ds.task_index[row]]),
            "dataset_index": d,
            "embodiment": embodiment,
            "index": row,
        }
        t = len(cfg.history)
        if self.codes is not None:
            codes = torch.from_numpy(self.codes[d][frame_rows].astype(np.int64))
            sample["history_codes"], sample["foresight_codes"] = codes[:t], codes[t + 1]
            frame_rows = frame_rows[t : t + 1]  # only the current frame is still needed
        frames = self._images(ds, frame_rows) if self.image_keys else None
        if frames is not None and self.codes is not None:
            sample["images"] = frames[0]
        elif frames is not None:
            sample["history"], sample["images"], sample["foresight"] = (
                frames[:t],
                frames[t],
                frames[t + 1],
            )
        return sample
