"""The recipe sections: defaults, field errors with key paths, and the mapping onto the
components' own configs (Objective, TrainSettings, TokenizerTrainConfig, EvalConfig, ...)."""

import copy

import pytest
import torch
from pydantic import ValidationError

from f1kit.model import F1Config, Objective
from f1kit.recipe import Recipe, RecipeError, TrainStage, recipe_from_dict
from f1kit.sim import MT10, DemoConfig, EvalConfig
from f1kit.train import TrainSettings
from foresight import TokenizerTrainConfig
from tests.f1kit.model.helpers import micro_model, random_batch
from tests.f1kit.recipe.helpers import TINY, problems, toy, train_stage


def test_minimal_recipe_fills_every_default():
    recipe = recipe_from_dict(toy())
    assert recipe.model.f1_config() == F1Config.tiny()
    assert recipe.model.init_from is None
    assert recipe.data.task_names == ("reach-v3",)
    assert recipe.data.history == [-9, -6, -3, 0] and recipe.data.chunk == 4
    assert [s.kind for s in recipe.stages] == ["tokenizer", "train", "evaluate"]
    assert recipe.stages[1].optimizer.betas == (0.9, 0.95)  # DESIGN.md s5
    assert recipe.stages[1].schedule.kind == "cosine" and recipe.stages[1].grad_clip == 1.0
    assert str(recipe.output_dir()) == "runs/toy"
    assert str(recipe_from_dict(toy(output="/tmp/x/{name}-a")).output_dir()) == "/tmp/x/toy-a"


def test_sections_are_frozen():
    recipe = recipe_from_dict(toy())
    with pytest.raises(ValidationError):
        recipe.seed = 3
    with pytest.raises(ValidationError):
        recipe.stages[1].steps = 3


def test_task_sets_resolve_but_stay_as_written():
    recipe = recipe_from_dict(toy(data={"tasks": "MT10"}))
    assert recipe.data.tasks == "MT10" and recipe.data.task_names == MT10


# ---- field errors: (change, key path, words the message must hold) ------------------------


def _set(data: dict, path: str, value) -> dict:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


UNKNOWN_KEYS = [
    ("nmae", "nmae", ["unknown key", "did you mean 'name'", "allowed keys here: name,"]),
    ("data.episdes", "data.episdes", ["unknown key", "'episodes'"]),
    ("model.trunk.depht", "model.trunk.depht", ["unknown key", "'depth'", "kv_heads"]),
    ("model.generation.tokenizer.pth", "model.generation.tokenizer.pth", ["'path'"]),
    ("stages.1.stpes", "stages.1.stpes", ["unknown key", "'steps'", "batch_size"]),
    ("stages.1.schedule.warmup", "stages.1.schedule.warmup", ["'warmup_steps'"]),
    ("stages.2.videos", "stages.2.videos", ["unknown key", "decode_foresight"]),
]


@pytest.mark.parametrize(("path", "where", "words"), UNKNOWN_KEYS)
def test_unknown_keys_are_errors_naming_the_key_and_the_allowed_ones(path, where, words):
    found = problems(_set(toy(), path, 1))
    assert list(found) == [where]
    for word in words:
        assert word in found[where]


WRONG_TYPES = [
    ("seed", "zero", "seed", ["valid integer", "'zero'"]),
    ("stages.1.steps", 2.5, "stages.1.steps", ["integer", "2.5"]),
    ("stages.1.steps", True, "stages.1.steps", ["boolean"]),
    ("stages.1.batch_size", 0, "stages.1.batch_size", ["greater than 0", "got 0"]),
    ("stages.1.lr.action", -1e-3, "stages.1.lr.action", ["greater than 0", "-0.001"]),
    (
        "stages.1.losses.generation",
        -0.1,
        "stages.1.losses.generation",
        ["greater than or equal to 0"],
    ),
    ("stages.1.train", "action", "stages.1.train", ["valid list", "'action'"]),
    ("stages.1.train.1", "vision", "stages.1.train.1", ["'action'", "got 'vision'"]),
    ("stages.1.losses", {"flow": 1.0}, "stages.1.losses.flow", ["'generation' or 'action'"]),
    ("stages.1.precision", "fp16", "stages.1.precision", ["'fp32' or 'bf16'", "'fp16'"]),
    ("stages.1.optimizer.betas", [0.9, 1.5], "stages.1.optimizer.betas.1", ["less than 1"]),
    ("stages.1.grad_clip", float("nan"), "stages.1.grad_clip", ["finite"]),
    ("stages.0.kind", "vae", "stages.0.kind", ["tokenizer, train, evaluate", "'vae'"]),
    ("stages.2.record", 3, "stages.2.record", ["3 videos exceed episodes 2"]),
    ("data.tasks", 7, "data.tasks", ["list or a valid string", "got 7"]),
    ("data.tasks", ["reach-v3", "fly-v3"], "data.tasks", ["'fly-v3'", "MT10"]),
    ("data.history", [0, -3], "data.history", ["increasing offsets"]),
    ("data.cameras", ["side"], "data.cameras", ["'side'", "corner"]),
    ("data.image_size", 4, "data.image_size", ["greater than or equal to 8"]),
    ("data.source", "hub", "data.source", ["'metaworld' or 'lerobot'", "'hub'"]),
    ("device", "tpu", "device", ["'auto', 'cpu' or 'cuda'"]),
    ("output", "runs/{date}", "output", ["{name}", "'date'"]),
    ("name", "my run", "name", ["pattern"]),
    ("model", 5, "model", ["dictionary", "got 5"]),
    ("model.trunk.depth", 0, "model.trunk.depth", ["greater than 0"]),
    ("stages", [], "stages", ["at least 1"]),
]


@pytest.mark.parametrize(("path", "value", "where", "words"), WRONG_TYPES)
def test_bad_values_name_the_path_the_value_and_what_is_expected(path, value, where, words):
    found = problems(_set(toy(), path, value))
    assert where in found, found
    for word in words:
        assert word in found[where], found[where]


def test_a_missing_required_key_is_named():
    data = toy()
    del data["stages"][1]["losses"]
    del data["model"]
    found = problems(data)
    assert found == {"stages.1.losses": "required key is missing", "model": found["model"]}
    assert "required key is missing" in found["model"]


def test_every_field_error_is_reported_at_once_with_the_file_name():
    data = _set(_set(toy(), "seed", -1), "stages.1.steps", "x")
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data, "my.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("my.yaml: seed: ") and lines[1].startswith(
        "my.yaml: stages.1.steps: "
    )


# ---- mapping onto the components ----------------------------------------------------------


def test_train_stage_objective_takes_losses_and_scales():
    model = F1Config.tiny(overrides={"generation": {"scales": 3}})
    stage = TrainStage.model_validate(train_stage(scales=3))
    assert stage.objective(model) == Objective(generation=0.1, action=1.0, scales=3)
    # scales null in an acting stage = the inference scales; a missing loss key weighs 0
    assert TrainStage.model_validate(train_stage()).objective(model).scales == 3
    align = TrainStage.model_validate(
        train_stage(train=["generation"], losses={"generation": 1.0}, lr={"generation": 3e-4})
    )
    assert align.objective(F1Config.tiny()) == Objective(generation=1.0, action=0.0, scales=None)
    with pytest.raises(ValidationError, match="foresight"):  # the removed teacher/sampled knob
        TrainStage.model_validate(train_stage(foresight="teacher"))


def test_train_stage_settings_carry_every_number_and_derive_the_seed():
    stage = TrainStage.model_validate(
        train_stage(
            steps=50,
            batch_size=16,
            lr={"generation": 1e-4, "action": 5e-4},
            optimizer={"betas": [0.8, 0.9], "weight_decay": 0.01},
            schedule={"warmup_steps": 5, "kind": "constant", "min_lr_ratio": 0.2},
            grad_clip=None,
            precision="bf16",
            checkpoint_every=25,
            log_every=5,
        )
    )
    assert stage.settings(recipe_seed=7, index=2) == TrainSettings(
        steps=50,
        batch_size=16,
        lr=5e-4,
        betas=(0.8, 0.9),
        weight_decay=0.01,
        warmup_steps=5,
        schedule="constant",
        min_lr_ratio=0.2,
        grad_clip=None,
        precision="bf16",
        seed=9,
        checkpoint_every=25,
        log_every=5,
        find_unused_parameters=False,  # G and A: every trained parameter gets a gradient
    )
    assert TrainStage.model_validate(train_stage(seed=123)).settings(7, 2).seed == 123


@pytest.mark.parametrize(
    ("train", "losses"),
    [
        (["action"], {"generation": 0.1, "action": 1.0}),
        (["generation", "action"], {"generation": 0.1, "action": 1.0}),
        (["understanding", "action"], {"generation": 0.1, "action": 1.0}),
        (["generation"], {"generation": 1.0}),
    ],
)
def test_find_unused_parameters_is_set_exactly_when_a_trained_parameter_gets_no_grad(train, losses):
    # DDP hangs or fails when a trained parameter misses its gradient and it was not told; the
    # flag costs a graph walk per step, so it should be off when every parameter is reached.
    stage = TrainStage.model_validate(
        train_stage(train=train, losses=losses, lr=dict.fromkeys(train, 1e-3))
    )
    model = micro_model()
    model.set_trainable(stage.train)
    loss, _ = model(
        random_batch(), torch.Generator().manual_seed(0), objective=stage.objective(model.config)
    )
    loss.backward()
    unreached = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert stage.settings(0, 0).find_unused_parameters == bool(unreached), unreached


def test_tokenizer_stage_maps_onto_the_tokenizer_trainer():
    recipe = recipe_from_dict(
        _set(
            toy(),
            "stages.0",
            {
                "kind": "tokenizer",
                "name": "tok",
                "steps": 30,
                "batch_size": 4,
                "lr": 1e-3,
                "optimizer": {"betas": [0.5, 0.9]},
                "kmeans_init_rounds": 3,
                "dead_code_threshold": None,
                "restart_every": 7,
                "vq_weight": 0.5,
            },
        )
    )
    assert recipe.stages[0].train_config(recipe_seed=4, index=0) == TokenizerTrainConfig(
        steps=30,
        lr=1e-3,
        seed=4,
        betas=(0.5, 0.9),
        vq_weight=0.5,
        dead_code_threshold=None,
        restart_every=7,
        kmeans_init_rounds=3,
    )


def test_evaluate_stage_defaults_to_the_training_tasks_cameras_and_size(tmp_path):
    recipe = recipe_from_dict(
        toy(data={"tasks": "MT10", "cameras": ["corner", "topview"], "image_size": 96})
    )
    stage = recipe.stages[2]
    assert stage.eval_config(recipe.data, tmp_path) == EvalConfig(
        tasks=MT10,
        episodes=2,
        max_steps=200,
        seed=10_000,
        cameras=("corner", "topview"),
        size=96,
        record=1,
        video_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="video_dir"):
        stage.eval_config(recipe.data)  # record 1 needs somewhere to write
    own = recipe_from_dict(_set(toy(), "stages.2.tasks", ["push-v3"])).stages[2]
    assert own.eval_config(recipe.data, tmp_path).tasks == ("push-v3",)


def test_decode_foresight_defaults_to_whether_the_model_has_generation():
    assert recipe_from_dict(toy()).stages[2].decodes_foresight(F1Config.tiny())
    no_gen = recipe_from_dict(toy(generation=False))
    assert not no_gen.stages[1].decodes_foresight(no_gen.model)
    off = recipe_from_dict(_set(toy(), "stages.2.decode_foresight", False))
    assert not off.stages[2].decodes_foresight(off.model)


def test_data_maps_onto_demo_and_window_configs():
    data = recipe_from_dict(
        toy(
            data={
                "tasks": ["push-v3"],
                "episodes": 5,
                "cameras": ["corner", "topview"],
                "history": [-4, -2, -1, 0],
                "foresight": 2,
                "normalization": "quantile",
                "seed": 3,
                "workers": 2,
                "max_steps": 150,
                "image_size": 32,
            }
        )
    ).data
    assert data.demo_config() == DemoConfig(
        tasks=("push-v3",),
        episodes=5,
        cameras=("corner", "topview"),
        size=32,
        max_steps=150,
        seed=3,
        workers=2,
    )
    window = data.window_config()
    assert window.history == (-4, -2, -1, 0) and window.foresight == 2 and window.chunk == 4
    assert window.image_keys == ("observation.images.corner", "observation.images.topview")
    assert window.normalization == "quantile"


def test_recipe_is_constructible_from_python_and_validates_there_too():
    recipe = Recipe(name="py", model=F1Config.tiny(generation=False), stages=toy(False)["stages"])
    assert recipe.stages[0].train == ["understanding", "action"]
    with pytest.raises(ValidationError, match="not an expert of this model"):
        Recipe(name="py", model=F1Config.tiny(generation=False), stages=[train_stage()])
    assert TINY["generation"] is not None  # the shared dict stays untouched
