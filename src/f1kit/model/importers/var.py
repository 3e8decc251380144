"""VAR's released tokenizer (``vae_ch160v4096z32.pth``, FoundationVision/VAR) as the tokenizer
part of an f1kit model directory.

VAR ships only a ``.pth`` file, so this is the one importer that reads a pickle format: with
``torch.load(weights_only=True)``, which refuses anything but tensors (`foresight.from_var`).
The renames and the architecture read off the shapes live in `foresight.var_weights`; every
tensor of the file is used (the EMA code-hit statistics of another scale schedule are replaced,
as VAR's own loader does). The model config is F1 at paper size with this tokenizer; only the
``tokenizer`` part is written. Use the directory as ``model.generation.tokenizer.path`` or in
``init_from``.
"""

from pathlib import Path

from f1kit.model.config import F1Config
from f1kit.model.importers.registry import Imported, importer
from foresight import VQVAEConfig, from_var


@importer("var")
def import_var(
    path: Path, scales: tuple[int, ...] | list[int] | None = None, norm_groups: int = 32
) -> Imported:
    """path: VAR's tokenizer file (``.pth`` or ``.safetensors``); scales: its schedule and
    norm_groups its GroupNorm groups (neither is stored in the file; VAR's when omitted)."""
    if isinstance(path, Path) and path.is_dir():
        raise ValueError(f"{path}: expected VAR's tokenizer file (.pth or .safetensors)")
    vae = from_var(path, scales=tuple(scales) if scales else None, norm_groups=norm_groups)
    preset = VQVAEConfig.var_256()
    overrides = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in vae.config.__dict__.items()
        if getattr(preset, name) != value
    }
    config = F1Config.paper(
        {"generation": {"tokenizer": {"preset": "var_256", "overrides": overrides}}}
    )
    state = {f"tokenizer.{k}": v for k, v in vae.state_dict().items()}

    def tensors(dtype):  # the quantizer stays float32 whatever the requested dtype
        del dtype
        return iter(state.items())

    info = {"scales": list(vae.config.scales)}
    return Imported(config, ("tokenizer",), tensors, info=info, count=len(state))
