"""The data of a recipe run: datasets, the policy's processors, and the tokenizer's codes.

datasets                 LeRobot folders as they are, or Meta-World demos generated once
processors               the pre/post-processor of every dataset's statistics (per embodiment)
check_eval_embodiments   an evaluate stage knows whose statistics the simulator's
                         observations use (checked before any stage runs)
generation_key           the image key of the generation camera
frame_codes              the frozen tokenizer's codes of every training frame, computed once
"""

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from f1kit.data import NormalizeStep, Processor, make_processors, read_dataset
from f1kit.model import F1
from f1kit.recipe.fields import RecipeError
from f1kit.recipe.schema import EvalStage, Recipe
from f1kit.train import barrier, is_main

log = logging.getLogger(__name__)

CODE_BATCH = 256  # frames tokenized per forward pass


def datasets(recipe: Recipe, out: Path, progress: bool) -> list:
    """The recipe's datasets: its local LeRobot folders, or Meta-World demos generated once into
    ``<out>/data/demos`` (rank 0 writes them, the other ranks wait)."""
    cfg = recipe.data
    # Only the recipe's cameras are read: a dataset's other cameras would only take memory.
    read = dict(decode=cfg.decode, image_keys=cfg.image_keys)
    if cfg.source == "lerobot":
        return [read_dataset(Path(p), **read) for p in cfg.paths]
    from f1kit.sim import generate_demos

    root = out / "data" / "demos"
    marker = root.parent / "demos.json"
    if not marker.exists():
        if is_main():
            demo = cfg.demo_config()
            # No marker: whatever is there is this run's own unfinished generation (a killed one).
            shutil.rmtree(root, ignore_errors=True)
            result = generate_demos(demo, root, progress=progress)
            marker.write_text(
                json.dumps(
                    {
                        "frames": result.frames,
                        "successes": result.successes,
                        "failures": result.failures,
                        "seconds": result.seconds,
                    },
                    indent=2,
                )
            )
        barrier()
    return [read_dataset(root, **read)]


def processors(data: list, recipe: Recipe) -> tuple[Processor, Processor]:
    """The policy's pre/post-processor: every dataset's statistics under its embodiment id, the
    same processors the training windows normalise with (saved with the policy)."""
    window = recipe.data.window_config()
    return make_processors(
        data, state_key=window.state_key, action_key=window.action_key, mode=window.normalization
    )


def check_eval_embodiments(recipe: Recipe, preprocessor: Processor) -> None:
    """Each evaluate stage names an embodiment of the data's (or there is only one), checked
    before any stage runs: the simulator's observations carry no embodiment of their own."""
    ids = preprocessor.step(NormalizeStep).embodiments
    problems = []
    for index, stage in enumerate(recipe.stages):
        if not isinstance(stage, EvalStage):
            continue
        at = f"stages.{index}.embodiment"
        if stage.embodiment is None and len(ids) > 1:
            problems.append(
                (
                    at,
                    f"the data has {len(ids)} embodiments {ids}; name the one the "
                    "simulator's observations are normalised with",
                )
            )
        elif stage.embodiment is not None and stage.embodiment not in ids:
            problems.append((at, f"{stage.embodiment!r} is not among the data's embodiments {ids}"))
    if problems:
        raise RecipeError(recipe.name, problems)


def generation_key(recipe: Recipe) -> str:
    """The image key of the generation camera: ``model.generation.camera`` indexes the training
    window's cameras (``data.cameras``), the order the batches hold them in."""
    gen = recipe.model.generation
    assert gen is not None  # only Generation models tokenize frames
    return recipe.data.image_keys[gen.camera]


def frame_codes(model: F1, data: list, key: str, out: Path, progress: bool) -> list[np.ndarray]:
    """The frozen tokenizer's codes of every frame of the generation camera, computed once in
    batches into ``data/codes/d<i>.npy`` (int16, one file per dataset) and memory-mapped back: a
    run's codes never have to fit in memory, and a resumed run reads them instead of recomputing.
    Other ranks wait for rank 0's files."""
    folder = out / "data" / "codes"
    paths = [folder / f"d{i}.npy" for i in range(len(data))]
    barrier()  # every rank looks at the same files, so all take the same branch below
    if all(p.exists() for p in paths):
        codes = [np.load(p, mmap_mode="r") for p in paths]
        if all(len(c) == len(ds) for c, ds in zip(codes, data, strict=True)):
            return codes
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
        device = next(model.parameters()).device
        for ds, path in zip(data, paths, strict=True):
            tmp = path.with_suffix(".tmp.npy")
            stored = None
            for lo in range(0, len(ds), CODE_BATCH):
                rows = np.arange(lo, min(lo + CODE_BATCH, len(ds)))
                frames = torch.from_numpy(ds.frames(key, rows)).permute(0, 3, 1, 2).unsqueeze(1)
                batch = model.frame_codes(frames.to(device)).cpu().numpy().astype(np.int16)
                if stored is None:
                    shape = (len(ds), *batch.shape[1:])
                    stored = np.lib.format.open_memmap(tmp, "w+", np.int16, shape)
                stored[rows] = batch
            assert stored is not None  # a dataset has at least one frame (the reader checks)
            stored.flush()
            del stored
            os.replace(tmp, path)
        log.info("tokenizer codes of %d frames computed", sum(len(ds) for ds in data))
    barrier()
    return [np.load(p, mmap_mode="r") for p in paths]
