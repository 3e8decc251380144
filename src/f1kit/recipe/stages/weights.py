"""The weights a run starts from and those a stage leaves in its directory: an ``init_from``
model directory, a trained tokenizer, a train stage's best or last weights (which the next stage
continues)."""

import logging
from pathlib import Path

from f1kit.model import F1
from f1kit.model.importers import init_from
from f1kit.recipe.init_checks import init_parts
from f1kit.recipe.schema import Recipe
from f1kit.recipe.schema.init import InitFrom
from f1kit.train import best_weights, load_checkpoint, load_latest, load_model_weights
from f1kit.train.parallel import holds_weights
from foresight import MultiScaleVQVAE

log = logging.getLogger(__name__)


def load_init(model: F1, recipe: Recipe, init: InitFrom, key: str, stage: bool) -> None:
    """Load an ``init_from`` directory into ``model`` (strict; the parts it lacks must be
    named under ``random``); a stage's (``stage``) keeps the run's tokenizer (`init_parts`)."""
    if not holds_weights(model):  # shapes only (a sharded run's other ranks): the main rank loads
        return
    how = init_parts(recipe, stage)
    parts = init_from(
        model, init.path, init.random, provided=how["provided"], match=how["match"], key=key
    )
    log.info("%s: %s loaded from %s; random: %s", key, list(parts), init.path, init.random)


def load_tokenizer_weights(model: F1) -> None:
    """``model.generation.tokenizer.path``: trained tokenizer weights (a ``.safetensors`` file
    from ``MultiScaleVQVAE.save``, a directory holding ``tokenizer.safetensors``, or a model
    directory holding the tokenizer part, e.g. ``f1kit convert --from var``)."""
    gen = model.config.generation
    if gen is None or gen.tokenizer.path is None or model.tokenizer is None:
        return
    path = Path(gen.tokenizer.path)
    if (path / "config.json").is_file():  # a model directory: its tokenizer part alone
        init_from(model, path, only=["tokenizer"], key="model.generation.tokenizer.path")
        return
    if path.is_dir():
        path = path / "tokenizer.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"model.generation.tokenizer.path: {path} not found")
    load_tokenizer(model, path, "model.generation.tokenizer.path")


def load_tokenizer(model: F1, path: Path, source: str) -> None:
    """Copy the tokenizer saved at ``path`` into the model, refusing another configuration."""
    loaded = MultiScaleVQVAE.load(path)
    if loaded.config != model.tokenizer.config:
        raise ValueError(
            f"{source}: {path} holds a tokenizer with config "
            f"{loaded.config}, the recipe describes {model.tokenizer.config}"
        )
    model.tokenizer.load_state_dict(loaded.state_dict())


def load_result_weights(model: F1, stage_dir: Path, final_step: int | None = None) -> dict | None:
    """Load a finished train stage's result into ``model``: the best weights its evaluation
    kept (returning their record), else its last checkpoint (returning None). ``final_step``
    (a stage done earlier): exactly that checkpoint, verified; never an older one in its place,
    which would continue the run from weights its ``done.json`` does not describe."""
    kept = best_weights(stage_dir)
    if not holds_weights(model):  # shapes only (a sharded run's other ranks): nothing to load
        return None if kept is None else kept[1]
    if kept is not None:
        path, record = kept
        device = next(model.parameters()).device
        model.load_state_dict(load_model_weights(path, device, model=model))
        log.info("%s: continuing from the best weights (step %d)", stage_dir.name, record["step"])
        return record
    ckpt = load_latest(stage_dir) if final_step is None else load_checkpoint(stage_dir, final_step)
    if ckpt is not None:
        ckpt.load_model(model)
    return None
