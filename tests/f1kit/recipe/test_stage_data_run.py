"""Per-stage data in a real run: stage I-II on a mixture group, stage III on the target group;
each stage's trainer is handed and draws only its group's windows, with its weighting."""

from pathlib import Path

import numpy as np
import pytest

from f1kit.recipe import RecipeError, recipe_from_dict
from f1kit.recipe.run import run_recipe
from f1kit.recipe.stages import train as train_runner
from tests.f1kit.recipe.lerobot_conventions import TASKS, lerobot_dataset
from tests.f1kit.recipe.test_lerobot_recipe import lerobot_recipe


def _recipe(root: Path, **post: object) -> dict:
    paths = [str(root / name) for name in ("mix-a", "mix-b", "target")]
    recipe = lerobot_recipe(root / "mix-a")
    recipe["data"] |= {
        "paths": paths,
        "groups": {"mixture": paths[:2], "target": paths[2:]},
        "weighting": "uniform",  # post-train's; align sets its own
    }
    align, post_train = recipe["stages"][1], recipe["stages"][2]
    align |= {"data": "mixture", "weighting": "pi0", "steps": 3}
    post_train |= {"data": "target", "steps": 2, **post}
    return recipe


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("groups")
    lerobot_dataset(root / "mix-a", episodes=2, length=10, seed=0)
    lerobot_dataset(root / "mix-b", episodes=4, length=12, seed=1)
    lerobot_dataset(root / "target", episodes=1, length=9, seed=2)  # TASKS[0] only
    return root


def test_each_stage_trains_on_its_groups_datasets(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, dict] = {}
    original = train_runner.train_stage

    def recording(model, loss_fn, dataset, settings, out_dir, **kwargs):
        record = seen[kwargs["name"]] = {"dataset": dataset, "drawn": []}
        record["weights"] = kwargs["sample_weights"]

        def loss(net, batch, generator):
            record["drawn"] += batch["dataset_index"].tolist()
            return loss_fn(net, batch, generator)

        return original(model, loss, dataset, settings, out_dir, **kwargs)

    monkeypatch.setattr(train_runner, "train_stage", recording)
    recipe = recipe_from_dict(_recipe(root), "groups.yaml")
    run_recipe(recipe, tmp_path / "run", progress=False)
    align, post = seen["align"], seen["post-train"]
    sizes = [20 + 1, 48 + 6]  # mix-a: episodes of 10 and 11 frames; mix-b: 12..15
    assert align["dataset"].indices == list(range(sum(sizes)))
    assert set(align["drawn"]) == {0, 1} and len(align["drawn"]) == 3 * 8
    # pi0 across the mixture's two datasets, each dataset's two tasks alike.
    weights = align["weights"] / align["weights"].sum()
    per_dataset = np.bincount(align["dataset"].dataset_groups, weights=weights)
    n = np.array(sizes, dtype=float)
    np.testing.assert_allclose(per_dataset, n**0.43 / (n**0.43).sum())
    assert post["dataset"].indices == list(range(sum(sizes), sum(sizes) + 9))
    assert set(post["drawn"]) == {2} and len(post["drawn"]) == 2 * 8
    assert post["weights"] is None  # data.weighting: uniform
    assert (tmp_path / "run" / "stages" / "2-post-train" / "done.json").exists()


def test_a_stages_tasks_missing_from_its_group_stop_the_run_before_any_stage(
    root: Path, tmp_path: Path
) -> None:
    recipe = recipe_from_dict(_recipe(root, tasks=[TASKS[1]]), "groups.yaml")
    with pytest.raises(RecipeError) as info:
        run_recipe(recipe, tmp_path / "run", progress=False)
    assert info.value.problems == [
        (
            "stages.2.tasks",
            f"['{TASKS[1]}'] not all found among the tasks of data group 'target' ['{TASKS[0]}']",
        )
    ]
    assert not (tmp_path / "run" / "stages").exists()
