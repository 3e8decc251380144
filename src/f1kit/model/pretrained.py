"""Save and load an F1 policy as a directory, never through pickle (DESIGN.md s9).

    <dir>/config.json                the model config (`F1Config`) and the policy section:
                                     cameras, history_offsets, dtype (of the weights)
    <dir>/model.safetensors          every weight, the frozen tokenizer included
    <dir>/policy_preprocessor.json   the processors (`f1kit.data.processor`, LeRobot's layout):
    <dir>/policy_postprocessor.json  state normalisation and action un-normalisation per
    <dir>/policy_*processor_step_*.safetensors   embodiment, and their statistics

Writing goes to a temporary sibling directory that replaces ``<dir>`` in one rename, so a crash
never leaves a half-written checkpoint. Loading builds the model on the meta device and assigns
the memory-mapped weights (`f1kit.model.loading`: no random initialisation first), optionally
cast to ``dtype`` (the tokenizer stays float32). It is strict: missing, unexpected, mis-shaped,
wrongly typed (without ``dtype``) or non-finite tensors raise `PretrainedError` listing every one
of them; so do a missing processor file (a policy would act in normalised units without it),
unknown keys in config.json, and weight aliases (``f1kit.aliases``) naming tensors the model does
not tie.
"""

import json
import shutil
import tempfile
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from f1kit.data.processor import (
    ACTION,
    POSTPROCESSOR,
    PREPROCESSOR,
    STATE,
    NormalizeStep,
    Processor,
    ProcessorError,
    UnnormalizeStep,
)
from f1kit.model.config import F1Config
from f1kit.model.loading import (
    LoadingError,
    build_empty,
    load_into_empty,
    mismatches,
    raise_mismatches,
    read_weights,
)
from f1kit.model.policy import F1Policy
from f1kit.model.publish import publish_directory
from f1kit.train import save_model_weights
from flow import Normalizer

FORMAT = "f1kit.policy/2"
# Format 1 kept the state/action statistics in normalization.safetensors (one embodiment).
LEGACY_FORMAT, LEGACY_STATS = "f1kit.policy/1", "normalization.safetensors"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
POLICY_KEYS = ("cameras", "history_offsets", "dtype")


class PretrainedError(LoadingError):
    """A policy directory that is incomplete or does not match its config."""


def save_pretrained(policy: F1Policy, directory: str | Path) -> Path:
    """Write ``policy`` to ``directory`` atomically (an existing one is replaced)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        config = {
            "format": FORMAT,
            "model": policy.model.config.model_dump(mode="json"),
            "policy": {
                "cameras": list(policy.cameras),
                "history_offsets": list(policy.offsets),
                "dtype": str(_dtype(policy.model)).removeprefix("torch."),
            },
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        # The checkpoints' writer: contiguous CPU copies, tied tensors stored once.
        save_model_weights(policy.model.state_dict(), tmp / WEIGHTS)
        # Always both processors: an empty one says "no normalisation" explicitly, so a missing
        # file is an error at load and never a silent switch to normalised units.
        for name, processor in (
            (PREPROCESSOR, policy.preprocessor),
            (POSTPROCESSOR, policy.postprocessor),
        ):
            (processor or Processor([], name)).save_pretrained(tmp)
        publish_directory(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_config(directory: str | Path) -> tuple[str, F1Config, dict]:
    """The format, the model config and the policy settings of a saved policy (format 1 or 2)."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise PretrainedError(f"{path}: not found (is {directory} a saved f1kit policy?)")
    data = json.loads(path.read_text())
    if data.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise PretrainedError(
            f"{path}: format {data.get('format')!r}, expected {FORMAT!r} (or {LEGACY_FORMAT!r})"
        )
    unknown = sorted(set(data) - {"format", "model", "policy"})
    if unknown:
        raise PretrainedError(f"{path}: unknown keys {unknown} (expected format, model, policy)")
    if data["format"] == LEGACY_FORMAT:
        data["model"] = _upgrade_format_1(data.get("model"))
    try:
        config = F1Config.model_validate(data["model"])
    except ValidationError as err:
        raise PretrainedError(f"{path}: invalid model config:\n{err}") from err
    settings = data.get("policy", {})
    unknown = sorted(set(settings) - set(POLICY_KEYS))
    if unknown:
        raise PretrainedError(f"{path}: policy: unknown keys {unknown} (expected {POLICY_KEYS})")
    return data["format"], config, settings


def _upgrade_format_1(model: object) -> object:
    """A format-1 model config in today's schema: ``generation.foresight`` (teacher / sampled,
    a training-only knob that docs/contract.md replaced) is dropped; inference never read it."""
    generation = model.get("generation") if isinstance(model, dict) else None
    if isinstance(generation, dict) and "foresight" in generation:
        model = {**model, "generation": {k: v for k, v in generation.items() if k != "foresight"}}
    return model


def load_pretrained(
    directory: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    **policy_args: object,
) -> F1Policy:
    """Rebuild the policy saved in ``directory``; ``policy_args`` override `F1Policy` options.

    dtype: cast the weights (e.g. ``torch.bfloat16``; the tokenizer stays float32); None: the
    weights must be in the dtype config.json records. device: where the weights go.

    Example:
        >>> policy = load_pretrained("runs/f1/policy", dtype=torch.bfloat16, device="cuda")
    """
    directory = Path(directory)
    fmt, config, settings = read_config(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise PretrainedError(f"{weights}: not found")
    dtype_name = settings.get("dtype", "float32")
    stored = getattr(torch, str(dtype_name), None)
    if not isinstance(stored, torch.dtype) or not stored.is_floating_point:
        raise PretrainedError(
            f"{directory / CONFIG}: policy.dtype expected a float dtype name such as 'float32', "
            f"got {dtype_name!r}"
        )
    model = build_empty(config, stored)
    try:
        tensors = read_weights(weights)  # memory-mapped
        load_into_empty(model, tensors, dtype=dtype, device=device, source=str(weights))
    except LoadingError as err:
        raise PretrainedError(str(err)) from err
    if fmt == LEGACY_FORMAT:
        processors = _legacy_processors(directory / LEGACY_STATS)
    else:
        processors = {}
        for name in (PREPROCESSOR, POSTPROCESSOR):
            try:
                processors[name] = Processor.from_pretrained(directory, name)
            except ProcessorError as err:
                raise PretrainedError(f"{err} (the policy's {name} is required)") from err
    args = {
        "cameras": tuple(settings.get("cameras", ("corner",))),
        "history_offsets": tuple(settings.get("history_offsets", (-9, -6, -3, 0))),
        "preprocessor": processors[PREPROCESSOR],
        "postprocessor": processors[POSTPROCESSOR],
        **policy_args,
    }
    return F1Policy(model, **args)  # type: ignore[arg-type]


def load_weights(model: nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    """Strict load into a built model (copies; a meta-built one: `loading.load_into_empty`):
    every tensor present with its shape, nothing extra, or a listing error. An older checkpoint
    layout is upgraded first (``F1.upgrade_state_dict``: `LEGACY_KEYS`). A tensor whose dtype
    differs from the model's, or holding NaN or inf, is an error too."""
    upgrade = getattr(model, "upgrade_state_dict", None)
    if upgrade is not None:
        tensors = upgrade(tensors)
    expected = model.state_dict()
    dtypes = {k: t.dtype for k, t in expected.items()}
    raise_mismatches(source, mismatches(expected, tensors, dtypes=dtypes), PretrainedError)
    model.load_state_dict(tensors, strict=True)


def _dtype(model: torch.nn.Module) -> torch.dtype:
    """The model's floating dtype (its first floating parameter's)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _legacy_processors(path: Path) -> dict[str, Processor]:
    """Format 1's normalization.safetensors (``state.center`` ... with ``state.mode`` ... in the
    metadata) as the two processors of one embodiment, ``default``."""
    if not path.is_file():
        raise PretrainedError(
            f"{path}: not found; a format-1 policy keeps its statistics there (without them it "
            "would act in normalised units)"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(path))
    norms: dict[str, Normalizer] = {}
    for name, key in (("state", STATE), ("action", ACTION)):
        if f"{name}.center" not in tensors:
            raise PretrainedError(f"{path}: no {name!r} statistics")
        mode = meta.get(f"{name}.mode")
        if mode is None:
            raise PretrainedError(f"{path}: no mode for {name!r} in the metadata")
        try:
            norms[key] = Normalizer(tensors[f"{name}.center"], tensors[f"{name}.scale"], mode)
        except ValueError as err:
            raise PretrainedError(f"{path}: {name}: {err}") from err
    pre = NormalizeStep({STATE: norms[STATE].mode}, {"default": {STATE: norms[STATE]}})
    post = UnnormalizeStep({ACTION: norms[ACTION].mode}, {"default": {ACTION: norms[ACTION]}})
    return {
        PREPROCESSOR: Processor([pre], PREPROCESSOR),
        POSTPROCESSOR: Processor([post], POSTPROCESSOR),
    }
