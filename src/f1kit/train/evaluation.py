"""Evaluation during a training stage: periodic scores, the best weights kept, early stopping.

A stage given a `PeriodicEval` calls ``run(step)`` on the main rank every ``every`` optimizer steps
and after the last one, always right after the checkpoint of that step is complete (the trainer
writes one at every evaluation step). ``run`` returns plain float scores, e.g. closed-loop success
on unseen layouts, a validation loss on held-out episodes, foresight quality. Under the stage's
output directory::

    evals.jsonl            one record per evaluation: {"step": s, <scores>}
    best/model.safetensors the weights that scored best on ``select`` so far (a copy of that
    best/meta.json         step's checkpoint weights), with the step and its scores

Ties keep the earlier step, unless a ``tiebreak`` score (lower is better, e.g. a validation loss)
separates them. With ``patience`` the stage stops once that many evaluations in a row
brought no improvement. Everything is rebuilt from ``evals.jsonl`` on resume (records after the
resumed step are dropped; an evaluation due at the resumed step that never finished runs again),
so a killed and resumed stage keeps, stops and selects exactly as an uninterrupted one.
Evaluation neither draws from nor disturbs the training random streams (the global generators'
states are restored after it) and leaves the model in train mode.
"""

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from f1kit.train.metrics import read_metrics, truncate_metrics
from f1kit.train.rng import get_rng_state, set_rng_state

log = logging.getLogger(__name__)

EVALS, BEST = "evals.jsonl", "best"


@dataclass(frozen=True)
class PeriodicEval:
    """What to evaluate and how to choose: ``run(step) -> scores`` every ``every`` steps."""

    every: int
    run: Callable[[int], dict[str, float]]
    select: str  # the score that picks the best weights
    minimize: bool = False  # True for a loss, False for a success rate
    patience: int | None = None  # evaluations without improvement before stopping
    tiebreak: str | None = None  # on a tie of ``select``, the lower value of this score wins

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every: expected an integer >= 1, got {self.every!r}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience: expected >= 1 evaluations or None, got {self.patience}")


class EvalTracker:
    """The evaluations of one stage so far, the best among them and whether to stop."""

    def __init__(self, out_dir: Path, spec: PeriodicEval, resume_step: int | None) -> None:
        self.spec = spec
        self.path = Path(out_dir) / EVALS
        self.best_dir = Path(out_dir) / BEST
        if resume_step is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
            shutil.rmtree(self.best_dir, ignore_errors=True)
        else:
            truncate_metrics(self.path, resume_step)
        self.records = read_metrics(self.path) if self.path.exists() else []
        self.best: dict | None = None
        self.stale = 0
        for record in self.records:
            self._rank(record)

    def due(self, step: int, total: int) -> bool:
        return step % self.spec.every == 0 or step == total

    def done_at(self, step: int) -> bool:
        return any(r["step"] == step for r in self.records)

    @property
    def stop(self) -> bool:
        return self.spec.patience is not None and self.stale >= self.spec.patience

    def evaluate(self, step: int, model: nn.Module, weights: Path) -> dict:
        """Run the evaluation at ``step`` (whose checkpoint weights are ``weights``), record it
        and keep the weights if they are the best so far; returns the record."""
        state = get_rng_state()
        try:
            scores = self.spec.run(step)
        finally:
            set_rng_state(state)
            model.train()
        if self.spec.select not in scores:
            raise KeyError(
                f"evaluation: the scores {sorted(scores)} lack the selection key "
                f"{self.spec.select!r}"
            )
        record = {"step": step, **{k: float(v) for k, v in scores.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(_finite(record)) + "\n")
        self.records.append(record)
        if self._rank(record):
            self._keep(weights, record)
        log.info("evaluation at step %d: %s (best: step %s)", step, scores, self.best["step"])
        return record

    def _rank(self, record: dict) -> bool:
        """Update best / stale with ``record``; True when it is the new best."""
        value, sign = _value(record, self.spec.select), 1.0 if self.spec.minimize else -1.0
        if self.best is None:
            better = True
        else:
            best = _value(self.best, self.spec.select)
            better = not math.isnan(value) and (math.isnan(best) or sign * value < sign * best)
            if value == best and self.spec.tiebreak is not None:
                better = _value(record, self.spec.tiebreak) < _value(self.best, self.spec.tiebreak)
        if better:
            self.best, self.stale = record, 0
        else:
            self.stale += 1
        return better

    def _keep(self, weights: Path, record: dict) -> None:
        tmp = self.best_dir.with_name(BEST + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(weights, tmp / weights.name)
        (tmp / "meta.json").write_text(json.dumps(_finite(record), indent=2))
        shutil.rmtree(self.best_dir, ignore_errors=True)
        os.replace(tmp, self.best_dir)


def _value(record: dict, key: str) -> float:
    value = record.get(key)
    return math.nan if value is None else float(value)


def _finite(record: dict) -> dict:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }


def best_weights(out_dir: Path) -> tuple[Path, dict] | None:
    """The kept best weights of a stage and their record, or None when it kept none."""
    best = Path(out_dir) / BEST
    meta = best / "meta.json"
    if not meta.exists():
        return None
    files = sorted(best.glob("*.safetensors"))
    if len(files) != 1:
        raise FileNotFoundError(f"{best}: expected one weights file beside meta.json, got {files}")
    return files[0], json.loads(meta.read_text())
