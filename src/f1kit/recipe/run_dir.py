"""The run directory: what must hold before a run writes into it, and what a resume may change.

``check_output`` runs before anything is written: a file where the run directory or one of its
folders (``data``, ``stages/<i>-<name>``, ``checkpoints``, ``policy``, ``plots``) belongs would
otherwise surface as a traceback mid-run, or after training.

``check_resume`` compares the recipe a resume is given with the run's own ``recipe.yaml``. The
run's settings are what its finished and started work used, so a resume refuses any change to
them, listing each changed key with its old and new value. Only these pass:

* ``name``, ``description``, ``threads``, ``device``, ``output`` (they change no result's meaning;
  a device or thread count may change float rounding, which is logged),
* with ``allow_changes``: keys of stages that have not started (no ``stages/<i>-<name>`` folder),
  e.g. more evaluation episodes, or stages appended at the end. They are logged, appended to
  ``resume.jsonl`` and listed in the report.
"""

import json
import logging
import time
from pathlib import Path

import yaml

from f1kit.recipe.fields import RecipeError
from f1kit.recipe.loading import recipe_from_dict
from f1kit.recipe.schema import Recipe, TrainStage

log = logging.getLogger(__name__)

RESUME_LOG = "resume.jsonl"
# Keys a resume may change freely: where, how fast and how spread over ranks the run goes
# (DCP checkpoints resume under any strategy), and what it is called.
FREE_KEYS = ("name", "description", "threads", "device", "output", "parallel")
FILES = ("recipe.yaml", "run.log", "report.md", RESUME_LOG)
FOLDERS = ("data", "stages", "policy", "plots")

Change = tuple[str, object, object]  # key path, old value, new value


def check_output(recipe: Recipe, out: Path) -> None:
    """Raise ``RecipeError`` naming every path of the run directory ``out`` that exists as the
    wrong kind (a file where a folder goes, or the reverse), or that cannot be made."""
    problems = []
    ancestor = out
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        problems.append(("output", f"{ancestor} is a file; the run directory {out} needs a folder"))
    elif out.is_dir():
        folders = [out / f for f in FOLDERS]
        for index, stage in enumerate(recipe.stages):
            stage_dir = out / "stages" / f"{index}-{stage.name}"
            folders.append(stage_dir)
            if isinstance(stage, TrainStage):
                folders.append(stage_dir / "checkpoints")
        for path in folders:
            if path.exists() and not path.is_dir():
                problems.append(("output", f"{path} is a file; the run writes a folder there"))
        for path in (out / f for f in FILES):
            if path.is_dir():
                problems.append(("output", f"{path} is a folder; the run writes a file there"))
    if problems:
        raise RecipeError(recipe.name, problems)


def check_resume(
    recipe: Recipe, out: Path, allow_changes: bool = False, record: bool = True
) -> list[Change]:
    """The changes between the run's ``recipe.yaml`` and ``recipe`` that a resume accepts
    (logged, and appended to ``resume.jsonl`` when ``record``), or ``RecipeError`` listing those
    it refuses."""
    path = out / "recipe.yaml"
    if not path.exists():
        return []
    try:
        old = recipe_from_dict(yaml.safe_load(path.read_text()), str(path))
    except (RecipeError, yaml.YAMLError) as err:
        raise RecipeError(
            recipe.name, [("", f"{path}: the run's recipe does not load ({err}); resume refused")]
        ) from err
    changes = _differences(old.model_dump(mode="json"), recipe.model_dump(mode="json"))
    started = _started(old, out)
    # Nothing made with the old settings yet (a run stopped before its demos): anything goes.
    fresh = not started and not (out / "data" / "demos.json").exists()
    refused, accepted = [], []
    for change in changes:
        head = change[0].split(".")
        unstarted_stage = head[0] == "stages" and len(head) > 1 and int(head[1]) not in started
        if head[0] in FREE_KEYS or fresh or (unstarted_stage and allow_changes):
            accepted.append(change)
        else:
            refused.append(change)
    if refused:
        hint = (
            "; only stages not yet started may change (pass --allow-changes)"
            if not allow_changes
            else ""
        )
        raise RecipeError(
            recipe.name,
            [
                (key, f"{_short(before)} -> {_short(after)}: the run in {out} used the old value")
                for key, before, after in refused
            ]
            + [("", f"resume refused: {len(refused)} change(s) to work already done{hint}")],
        )
    if accepted and record:
        for key, before, after in accepted:
            log.warning("resume changes %s: %s -> %s", key, _short(before), _short(after))
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "changes": [{"key": k, "old": b, "new": a} for k, b, a in accepted],
        }
        with (out / RESUME_LOG).open("a") as f:
            f.write(json.dumps(record) + "\n")
    return accepted


def resume_records(out: Path) -> list[dict]:
    """What earlier resumes of the run in ``out`` changed (``resume.jsonl``), oldest first."""
    path = out / RESUME_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _started(recipe: Recipe, out: Path) -> set[int]:
    return {
        index
        for index, stage in enumerate(recipe.stages)
        if (out / "stages" / f"{index}-{stage.name}").exists()
    }


def _differences(old: object, new: object, key: str = "") -> list[Change]:
    """Every leaf that differs between two JSON-like values, by dotted key path (list items by
    index; a value present on one side only is compared with None)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            out += _differences(old.get(k), new.get(k), f"{key}.{k}" if key else str(k))
        return out
    if isinstance(old, list) and isinstance(new, list) and key == "stages":
        out = []
        for i in range(max(len(old), len(new))):
            a = old[i] if i < len(old) else None
            b = new[i] if i < len(new) else None
            out += _differences(a, b, f"{key}.{i}")
        return out
    return [] if old == new else [(key, old, new)]


def _short(value: object, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
