"""A recipe on a LeRobot dataset written with LeRobot's own conventions runs end to end: tokenizer,
stage I, stage II/III, a saved policy that acts on an observation of the dataset's shape."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from f1kit.model import F1Policy
from f1kit.recipe import recipe_from_dict
from f1kit.recipe.run import run_recipe
from tests.f1kit.recipe.lerobot_conventions import (
    ACTION_DIM,
    IMAGE_KEY,
    SIZE,
    STATE_DIM,
    TASKS,
    VIDEO_KEY,
    lerobot_dataset,
)

MICRO = Path(__file__).with_name("micro.yaml")


def lerobot_recipe(root: Path) -> dict:
    """micro.yaml's model and stages on the dataset at ``root``: two cameras (the video one
    generated), 6-d state, 7-d action, no simulator evaluation (it is not a Meta-World robot)."""
    recipe = yaml.safe_load(MICRO.read_text())
    recipe["name"] = "lerobot-micro"
    recipe["data"] = {
        "source": "lerobot",
        "paths": [str(root)],
        "cameras": ["top", "wrist"],
        "image_size": SIZE,
        "chunk": 3,
    }
    recipe["model"]["action"].update(action_dim=ACTION_DIM, state_dim=STATE_DIM)
    recipe["stages"] = [s for s in recipe["stages"] if s["kind"] != "evaluate"]
    recipe["stages"][-1].pop("evaluate")
    return recipe


@pytest.fixture(scope="module")
def lerobot_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = lerobot_dataset(tmp_path_factory.mktemp("data") / "so100")
    out = tmp_path_factory.mktemp("runs") / "lerobot"
    run_recipe(recipe_from_dict(lerobot_recipe(root), "lerobot.yaml"), out, progress=False)
    return root, out


def test_a_lerobot_sourced_recipe_runs_every_stage(lerobot_run: tuple[Path, Path]) -> None:
    root, out = lerobot_run
    for stage in ("0-tokenizer", "1-align", "2-post-train"):
        assert (out / "stages" / stage / "done.json").exists(), stage
    # The codes of every frame of the generation camera (the video one), from this run's tokenizer.
    codes = np.load(out / "data" / "codes" / "d0.npy", mmap_mode="r")
    assert len(codes) == json.loads((root / "meta/info.json").read_text())["total_frames"]
    assert "post-train" in (out / "report.md").read_text()


def test_the_saved_policy_acts_on_an_observation_of_the_datasets_shape(
    lerobot_run: tuple[Path, Path],
) -> None:
    _, out = lerobot_run
    policy = F1Policy.from_pretrained(out / "policy")
    rng = np.random.default_rng(0)
    obs = {
        VIDEO_KEY: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
        IMAGE_KEY: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=STATE_DIM).astype(np.float32),
        "task": TASKS[1],
    }
    action = policy.select_action(obs)
    assert action.shape == (ACTION_DIM,) and np.isfinite(action).all()
