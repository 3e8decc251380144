"""The cross-section rules: each impossible combination fails with its key path and reason, the
valid recipe next to it passes (so no rule holds vacuously), and all problems come at once."""

import copy

import pytest

from f1kit.recipe import recipe_from_dict
from tests.f1kit.recipe.helpers import TINY, TINY_NO_GEN, problems, toy, train_stage

TOKENIZER = {"kind": "tokenizer", "name": "tok", "steps": 10, "batch_size": 8}
EVALUATE = {"kind": "evaluate", "name": "eval", "episodes": 2}
ACTION_ONLY = train_stage(name="act", train=["action"], losses={"action": 1.0}, lr={"action": 1e-3})


def model(with_generation: bool = True, **changes: dict) -> dict:
    """The tiny model dict with some sections updated key by key."""
    out = copy.deepcopy(TINY if with_generation else TINY_NO_GEN)
    for section, values in changes.items():
        out[section] = {**out[section], **values}
    return out


# (recipe, key path, words the message must hold)
CASES = {
    "duplicate stage name": (
        toy(stages=[TOKENIZER, train_stage(), train_stage(), EVALUATE]),
        "stages.2.name",
        ["'post' is already the name of stages.1", "unique"],
    ),
    "expert absent from No-Gen": (
        toy(model=model(False), stages=[train_stage(losses={"action": 1.0}), EVALUATE]),
        "stages.0.train.0",
        ["'generation' is not an expert of this model", "No-Gen", "understanding, action"],
    ),
    "generation loss without G": (
        toy(
            model=model(False), stages=[{**ACTION_ONLY, "losses": {"generation": 0.1, "action": 1}}]
        ),
        "stages.0.losses.generation",
        ["0.1 needs a Generation expert", "No-Gen"],
    ),
    "scales on No-Gen": (
        toy(model=model(False), stages=[{**ACTION_ONLY, "scales": 2}]),
        "stages.0.scales",
        ["Generation expert", "null"],
    ),
    "acting stage at another scale count than inference": (
        toy(stages=[TOKENIZER, train_stage(scales=3), EVALUATE]),
        "stages.1.scales",
        ["3 differs from model.generation.scales = 4", "inference generates"],
    ),
    "decode_foresight on No-Gen": (
        toy(model=model(False), stages=[ACTION_ONLY, {**EVALUATE, "decode_foresight": True}]),
        "stages.1.decode_foresight",
        ["Generation expert"],
    ),
    "tokenizer stage on No-Gen": (
        toy(model=model(False), stages=[TOKENIZER, ACTION_ONLY]),
        "stages.0.kind",
        ["tokenizer stage needs a Generation expert"],
    ),
    "scales beyond the tokenizer": (
        toy(stages=[TOKENIZER, train_stage(scales=5)]),
        "stages.1.scales",
        ["5 exceeds the tokenizer's 4 scales (1, 2, 3, 4)", "1..4"],
    ),
    "no tokenizer before a G stage": (
        toy(stages=[train_stage(), EVALUATE]),
        "stages.0",
        ["no tokenizer stage comes before", "tokenizer.path"],
    ),
    "tokenizer retrained after G learned its codes": (
        toy(stages=[TOKENIZER, train_stage(), {**TOKENIZER, "name": "tok2"}]),
        "stages.2",
        ["retraining the tokenizer after stage 'post'"],
    ),
    "evaluate before any training": (
        toy(stages=[TOKENIZER, EVALUATE, train_stage()]),
        "stages.1",
        ["no train stage comes before this evaluate stage"],
    ),
    "evaluation on the training layouts": (
        toy(stages=[TOKENIZER, train_stage(), {**EVALUATE, "seed": 0}]),
        "stages.2.seed",
        ["equals data.seed", "training layouts"],
    ),
    "chunk differs from the model's": (
        toy(data={"chunk": 8}),
        "data.chunk",
        ["8 differs from model.action.chunk 4"],
    ),
    "history length differs from the model's": (
        toy(data={"history": [-3, 0]}),
        "data.history",
        ["2 offsets [-3, 0]", "model.generation.history is 4"],
    ),
    "generation camera out of range": (
        toy(model=model(generation={"camera": 1})),
        "model.generation.camera",
        ["index 1 is out of range", "['corner']"],
    ),
    "action dim below Meta-World's": (
        toy(model=model(action={"action_dim": 3})),
        "model.action.action_dim",
        ["3 is smaller than Meta-World's 4 action dims"],
    ),
    "lr for an untrained expert": (
        toy(
            stages=[
                TOKENIZER,
                train_stage(lr={"generation": 1e-3, "action": 1e-3, "understanding": 1}),
            ]
        ),
        "stages.1.lr",
        ["['understanding'] are not trained"],
    ),
    "lr missing for a trained expert": (
        toy(stages=[TOKENIZER, train_stage(lr={"action": 1e-3})]),
        "stages.1.lr",
        ["missing ['generation']"],
    ),
    "every loss weight zero": (
        toy(
            stages=[
                TOKENIZER,
                train_stage(
                    train=["generation"], lr={"generation": 1e-3}, losses={"generation": 0.0}
                ),
            ]
        ),
        "stages.1.losses",
        ["at least one of generation/action needs a weight > 0"],
    ),
    "action trained without its loss": (
        toy(stages=[TOKENIZER, train_stage(losses={"generation": 1.0})]),
        "stages.1.losses.action",
        ["action expert is trained but its loss weight is 0"],
    ),
    "expert listed twice": (
        toy(stages=[TOKENIZER, train_stage(train=["action", "generation", "action"])]),
        "stages.1.train",
        ["listed twice"],
    ),
    "warmup longer than the stage": (
        toy(stages=[TOKENIZER, train_stage(steps=10, schedule={"warmup_steps": 11})]),
        "stages.1.schedule.warmup_steps",
        ["11 exceeds the stage's 10 steps"],
    ),
    "zero steps": (
        toy(stages=[TOKENIZER, train_stage(steps=0)]),
        "stages.1.steps",
        ["greater than 0"],
    ),
    "zero batch": (
        toy(stages=[{**TOKENIZER, "batch_size": 0}]),
        "stages.0.batch_size",
        ["greater than 0", "got 0"],
    ),
    "evaluate tasks that do not resolve": (
        toy(stages=[TOKENIZER, train_stage(), {**EVALUATE, "tasks": ["reach-v2"]}]),
        "stages.2.tasks",
        ["unknown Meta-World v3 task(s) ['reach-v2']"],
    ),
    "unregistered vision encoder": (
        toy(model=model(vision={"name": "clip"})),
        "model.vision.name",
        ["'clip' is not a registered vision encoder", "'siglip', 'vit'"],
    ),
    "unknown vit arg": (
        toy(model=model(vision={"args": {"image_size": 64, "patchsize": 8}})),
        "model.vision.args",
        ["unknown vit args ['patchsize']", "patch_size"],
    ),
    "inconsistent vit args": (
        toy(model=model(vision={"args": {"image_size": 64, "patch_size": 7}})),
        "model.vision.args",
        ["multiple of patch_size 7"],
    ),
    "unregistered text tokenizer": (
        toy(model=model(text={"name": "sentencepiece"})),
        "model.text.name",
        ["'bytes', 'hf'"],
    ),
    "unknown text arg": (
        toy(model=model(text={"args": {"max_len": 8}})),
        "model.text.args",
        ["unknown bytes args ['max_len']", "max_length"],
    ),
    "lerobot without paths": (
        toy(data={"source": "lerobot"}),
        "data.paths",
        ["needs at least one dataset root"],
    ),
    "paths with metaworld": (
        toy(data={"paths": ["/data/x"]}),
        "data.paths",
        ["only for source: lerobot"],
    ),
    "demo settings with lerobot": (
        toy(data={"source": "lerobot", "paths": ["/d"], "episodes": 5}),
        "data.episodes",
        ["only for source: metaworld"],
    ),
    "lerobot evaluation without its tasks": (
        toy(data={"source": "lerobot", "paths": ["/d"]}),
        "stages.2.tasks",
        ["name them here"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_impossible_combinations_fail_with_the_key_path_and_reason(case):
    data, where, words = CASES[case]
    found = problems(data)
    assert where in found, found
    for word in words:
        assert word in found[where], found[where]


def test_the_base_recipes_of_the_table_are_valid():
    # Each case above is one change away from these, so every rule is seen to pass and fail.
    for generation in (True, False):
        recipe_from_dict(toy(generation))
    recipe_from_dict(toy(stages=[TOKENIZER, train_stage(scales=4), {**EVALUATE, "seed": 1}]))
    recipe_from_dict(
        toy(
            data={"source": "lerobot", "paths": ["/d"]},
            stages=[TOKENIZER, train_stage(), {**EVALUATE, "tasks": "reach-v3"}],
        )
    )


def test_a_tokenizer_path_replaces_the_tokenizer_stage():
    path = model(generation={"tokenizer": {"preset": "small_64", "path": "weights/tok"}})
    recipe = recipe_from_dict(toy(model=path, stages=[train_stage(), EVALUATE]))
    assert recipe.model.generation.tokenizer.path == "weights/tok"


def test_generation_only_stage_one_then_joint_stages_is_the_paper_schedule():
    align = train_stage(
        name="align", train=["generation"], losses={"generation": 1.0}, lr={"generation": 3e-4}
    )
    post = train_stage(
        name="post",
        train=["understanding", "generation", "action"],
        lr={"understanding": 5e-5, "generation": 5e-5, "action": 5e-5},
        scales=4,
    )
    recipe = recipe_from_dict(toy(stages=[TOKENIZER, align, post, EVALUATE]))
    assert [s.name for s in recipe.stages] == ["tok", "align", "post", "eval"]


def test_a_type_error_inside_a_block_config_is_still_a_recipe_error():
    found = problems(toy(model=model(action={"solver": {"name": "euler", "args": {"steps": "x"}}})))
    assert found == {"model.action.solver.args.steps": "expected int, got 'x'"}


def test_all_cross_section_problems_are_reported_together():
    found = problems(
        toy(data={"chunk": 8}, stages=[EVALUATE, train_stage(), {**TOKENIZER, "name": "post"}])
    )
    assert set(found) == {"data.chunk", "stages.0", "stages.1", "stages.2", "stages.2.name"}
    assert "no train stage comes before" in found["stages.0"]
    assert "no tokenizer stage comes before" in found["stages.1"]
    assert "retraining the tokenizer" in found["stages.2"]


def test_evaluation_during_training_never_reuses_the_final_layouts() -> None:
    recipe = toy()
    recipe["stages"][1]["evaluate"] = {"every": 5, "seed": 10_000}  # the evaluate stage's seed
    assert "must not score it" in problems(recipe)["stages.1.evaluate.seed"]
    recipe["stages"][1]["evaluate"] = {"every": 5, "seed": 0}  # the demos' layouts
    assert "training layouts" in problems(recipe)["stages.1.evaluate.seed"]
    recipe["stages"][1]["evaluate"] = {"every": 5, "select": "val_loss"}
    assert "data.validation > 0" in problems(recipe)["stages.1.evaluate.select"]
    recipe["stages"][1]["evaluate"] = {"every": 5, "episodes": 0}
    assert "success needs episodes > 0" in problems(recipe)["stages.1.evaluate.select"]
    recipe["stages"][1]["evaluate"] = {"every": 5, "episodes": 0, "select": "val_loss"}
    recipe["data"] = {"validation": 1}
    assert recipe_from_dict(recipe, "toy.yaml").stages[1].evaluate.every == 5
