"""The run directory: a resume refuses a recipe that changes finished or started work (listing
each key, old and new), a file where a run folder goes is named before anything is written, and
a stage is done only once its policy is written."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from f1kit.cli import app
from f1kit.data import Episode, write_dataset
from f1kit.model import F1Policy
from f1kit.recipe import RecipeError, recipe_from_dict, resolved_yaml
from f1kit.recipe.report import _resume_section
from f1kit.recipe.run import run_recipe
from f1kit.recipe.run_dir import check_output, check_resume, resume_records
from f1kit.recipe.stages.weights import load_result_weights
from f1kit.sim import DemoResult
from f1kit.train import CheckpointError, RunLock, RunLockedError, save_checkpoint
from tests.f1kit.model.helpers import micro_model
from tests.f1kit.recipe.helpers import toy
from tests.f1kit.recipe.lerobot_conventions import lerobot_dataset
from tests.f1kit.recipe.test_lerobot_recipe import lerobot_recipe


def _started_run(tmp_path: Path, started: int) -> tuple[dict, Path]:
    """A run directory of the toy recipe (tokenizer, train, evaluate) whose first ``started``
    stages have begun."""
    recipe = toy()
    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    (out / "data" / "demos.json").write_text("{}")
    (out / "recipe.yaml").write_text(resolved_yaml(recipe_from_dict(recipe, "toy.yaml")))
    for index, stage in enumerate(recipe["stages"][:started]):
        (out / "stages" / f"{index}-{stage['name']}").mkdir(parents=True)
    return recipe, out


def _changed(recipe: dict, **changes: object) -> dict:
    """``recipe`` with dotted ``changes`` (``stages__1__batch_size`` for stages.1.batch_size)."""
    recipe = yaml.safe_load(yaml.safe_dump(recipe))
    for key, value in changes.items():
        *path, last = key.split("__")
        node = recipe
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value
    return recipe


def test_resume_refuses_changes_to_started_work_naming_each(tmp_path: Path) -> None:
    recipe, out = _started_run(tmp_path, started=2)
    before = (out / "recipe.yaml").read_text()
    changed = _changed(recipe, seed=7, stages__1__batch_size=4, stages__2__episodes=9)
    with pytest.raises(RecipeError) as info:
        check_resume(recipe_from_dict(changed, "toy.yaml"), out)
    found = dict(info.value.problems)
    assert found["seed"].startswith("0 -> 7")
    assert found["stages.1.batch_size"].startswith("8 -> 4")
    assert "stages.2.episodes" in found  # not started, but not allowed without the flag
    assert "--allow-changes" in found[""]
    assert (out / "recipe.yaml").read_text() == before and not (out / "resume.jsonl").exists()


def test_allowed_changes_are_only_unstarted_stages_and_are_recorded(tmp_path: Path) -> None:
    recipe, out = _started_run(tmp_path, started=2)
    more = recipe_from_dict(_changed(recipe, stages__2__episodes=9, threads=1), "toy.yaml")
    accepted = check_resume(more, out, allow_changes=True)
    assert {k for k, _, _ in accepted} == {"stages.2.episodes", "threads"}
    recorded = resume_records(out)[0]["changes"]
    assert {"key": "stages.2.episodes", "old": 2, "new": 9} in recorded
    assert "| `stages.2.episodes` | 2 | 9 |" in "\n".join(_resume_section(out))
    started = recipe_from_dict(_changed(recipe, stages__1__steps=99), "toy.yaml")
    with pytest.raises(RecipeError, match=r"stages\.1\.steps.*20 -> 99"):
        check_resume(started, out, allow_changes=True)
    # Nothing made yet (no stage, no demos): the new recipe simply replaces the old one.
    (out / "data" / "demos.json").unlink()
    for stage in (out / "stages").iterdir():
        stage.rmdir()
    assert check_resume(recipe_from_dict(_changed(recipe, seed=3), "toy.yaml"), out)


def test_cli_resume_with_a_changed_recipe_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    recipe, out = _started_run(tmp_path, started=1)
    file = tmp_path / "toy.yaml"
    file.write_text(yaml.safe_dump(recipe))
    before = (out / "recipe.yaml").read_text()
    args = ["recipe", "run", str(file), "--output", str(out), "--resume"]
    result = CliRunner().invoke(app, [*args, "--set", "stages.0.steps=3"])
    assert result.exit_code == 2, result.output
    assert "stages.0.steps: 10 -> 3" in result.output
    assert (out / "recipe.yaml").read_text() == before


@pytest.mark.parametrize("where", ["policy", "stages/1-post", "stages/1-post/checkpoints", "data"])
def test_a_file_where_a_run_folder_goes_is_named_before_anything_is_written(
    tmp_path: Path, where: str
) -> None:
    recipe = recipe_from_dict(toy(), "toy.yaml")
    out = tmp_path / "run"
    (out / where).parent.mkdir(parents=True, exist_ok=True)
    (out / where).write_text("in the way")
    with pytest.raises(RecipeError, match=f"{out / where} is a file"):
        run_recipe(recipe, out, resume=True, progress=False)
    assert not (out / "recipe.yaml").exists()
    (tmp_path / "plain").write_text("")
    with pytest.raises(RecipeError, match="is a file; the run directory"):
        check_output(recipe, tmp_path / "plain" / "run")


def test_a_stage_is_done_only_after_its_policy_is_written(tmp_path: Path, monkeypatch) -> None:
    root = lerobot_dataset(tmp_path / "so100", episodes=2, length=12)
    recipe = recipe_from_dict(lerobot_recipe(root), "lerobot.yaml")
    out = tmp_path / "run"
    save = F1Policy.save_pretrained

    def failing(self: F1Policy, directory) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(F1Policy, "save_pretrained", failing)
    with pytest.raises(OSError, match="disk full"):
        run_recipe(recipe, out, progress=False)
    assert (out / "stages" / "1-align" / "checkpoints").exists()  # trained to the end
    assert not (out / "stages" / "1-align" / "done.json").exists()  # but not done
    monkeypatch.setattr(F1Policy, "save_pretrained", save)
    run_recipe(recipe, out, resume=True, progress=False)
    assert (out / "stages" / "2-post-train" / "done.json").exists()
    assert F1Policy.from_pretrained(out / "policy") is not None


def test_a_second_run_on_a_locked_directory_is_refused(tmp_path: Path) -> None:
    recipe, out = _started_run(tmp_path, started=1)
    before = (out / "recipe.yaml").read_text()
    more = recipe_from_dict(_changed(recipe, stages__2__episodes=9), "toy.yaml")
    lock = RunLock(out).acquire()  # another run holds the directory
    try:
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            run_recipe(more, out, resume=True, allow_changes=True, progress=False)
    finally:
        lock.release()
    assert (out / "recipe.yaml").read_text() == before
    assert not (out / "resume.jsonl").exists()  # nothing recorded for a run that never ran


def test_a_run_that_fails_before_making_anything_leaves_nothing_behind(
    tmp_path: Path, monkeypatch
) -> None:
    from f1kit.recipe.stages import RunContext

    def broken(*args, **kwargs):
        raise RuntimeError("no data today")

    monkeypatch.setattr(RunContext, "open", broken)
    recipe = recipe_from_dict(toy(), "toy.yaml")
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="no data today"):
        run_recipe(recipe, out, progress=False)
    assert not out.exists() or not any(out.iterdir())  # a rerun is not told "not empty"
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "data" / "demos.json").write_text("{}")  # demos were made: they are kept
    with pytest.raises(RuntimeError, match="no data today"):
        run_recipe(recipe, out, resume=True, progress=False)
    assert (out / "data" / "demos.json").exists() and (out / "recipe.yaml").exists()


def test_a_done_stage_continues_from_its_own_final_checkpoint_or_stops(tmp_path: Path) -> None:
    model = micro_model(generation=False)
    stage = tmp_path / "stage"
    for step in (100, 200):
        state = {k: v + step for k, v in model.state_dict().items()}
        save_checkpoint(stage, step, state, {}, {"step": step})
    load_result_weights(model, stage, final_step=200)
    assert all(torch.equal(v, micro_model(False).state_dict()[k] + 200)
               for k, v in model.state_dict().items())  # fmt: skip
    weights = stage / "checkpoints" / "step-0000200" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte flipped: only the hash sees it
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="step-0000200"):  # not step 100 in its place
        load_result_weights(model, stage, final_step=200)


def test_a_killed_demo_generation_is_redone_on_resume(tmp_path: Path, monkeypatch) -> None:
    from f1kit.recipe import data as recipe_data

    out = tmp_path / "run"
    partial = out / "data" / "demos" / "data" / "chunk-000"
    partial.mkdir(parents=True)
    (partial / "file-000.parquet").write_bytes(b"half an episode")  # killed before its meta
    made = []

    def generate(config, root, progress=False, overwrite=False):
        made.append(root)
        arrays = {
            "action": np.zeros((3, 4), np.float32),
            "observation.state": np.zeros((3, 4), np.float32),
            "observation.images.corner": np.zeros((3, 8, 8, 3), np.uint8),
        }
        episode = Episode("reach", arrays)
        write_dataset(root, [episode], fps=10, overwrite=overwrite)
        return DemoResult([], frames=3, successes={}, failures={}, fps=10, seconds=0.0)

    monkeypatch.setattr("f1kit.sim.generate_demos", generate)
    data = recipe_data.datasets(recipe_from_dict(toy(), "toy.yaml"), out, progress=False)
    assert made and len(data[0]) == 3 and (out / "data" / "demos.json").exists()
