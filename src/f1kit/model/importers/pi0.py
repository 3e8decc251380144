"""pi0 (lerobot's ``PI0Policy``, openpi's PyTorch ``PI0Pytorch``) as F1: No-Gen by default.

pi0 is F1 without the Generation expert: a PaliGemma (SigLIP + Gemma) and an action expert on one
mixture-of-transformers stack, flow matching in the mirrored time convention. So:

    PaliGemma (SigLIP, projector, Gemma, norm)  -> the Understanding part (importers/paligemma.py)
    gemma_expert layers, final norm              -> trunk experts.action, final_norms.action (+1)
    state_proj                                   -> action_head.state_in
    action_in_proj                               -> action_head.action_in
    action_time_mlp_in / _out                    -> action_head.time_mlp.0 / .2
    action_out_proj                              -> action_head.action_out

The time MLP needs no permutation: pi0 and `flow.FlowMatchingHead` both feed it
``[action_in(x), sincos(t)]``, action first, sine half before cosine half. The weights keep
pi0's time convention (``action.weights_convention: pi0``): the head calls them at
``t = 1 - tau`` and negates their velocity, so pi0's sampler (Euler from t = 1 down to 0) is ours
from tau = 0 to 1, and pi0's time sampling t = 0.001 + 0.999 Beta(1.5, 1) is our ``beta``
sampler, tau = 0.999 (1 - Beta(1.5, 1)), in distribution. ``generation=True`` targets a full F1
whose G (``generation_width``) and VQ tokenizer start random.

The input embedding is ``embed_tokens``, or ``paligemma.lm_head.weight`` where a file has no
``embed_tokens`` (openpi: the tied pair was saved once, under lm_head). Dropped on purpose: the
PaliGemma LM head when ``embed_tokens`` is present (F1 never decodes text; lerobot 0.6 does not
even tie it), the expert's LM head (never used; openpi never converts it), a SigLIP pooling head.
Where the keys, settings and sizes come from, and what is refused (pi0.5: adaptive norms), is
`importers.pi0_checkpoint`.

Text: no pi0 checkpoint stores its tokenizer (PaliGemma's, ``google/paligemma-3b-pt-224``), so
``text_tokenizer`` (a local directory with its files) is required unless the checkpoint
directory holds one; the files go to ``<model dir>/tokenizer/``. pi0's prompt is the task
followed by ``"\\n"``, BOS added, no EOS, right-padded to ``tokenizer_max_length`` (padding masked
out, as in F1's prefix): the text config sets ``append_eos: false``; the ``"\\n"`` is the
caller's, as in lerobot's processor.
"""

import re
from pathlib import Path

from attention import ACTION, UNDERSTANDING
from f1kit.model.config import F1Config
from f1kit.model.importers.mapping import Rule, WeightImportError
from f1kit.model.importers.paligemma import (
    DROPPED_POOLING,
    gemma_decoder_rules,
    tokenizer_files,
    understanding_rules,
)
from f1kit.model.importers.pi0_checkpoint import (
    NAME,
    Pi0Keys,
    Settings,
    check_not_pi05,
    read_settings,
    shape_of,
    siglip_args,
    trunk_geometry,
)
from f1kit.model.importers.registry import Imported, expected_shapes, imported_from_plan, importer
from f1kit.model.importers.source import SourceError, SourceTensors

DROPPED_VLM_HEAD = (
    "PaliGemma's LM head: F1 never decodes text (the input embedding is embed_tokens, as in pi0)"
)
DROPPED_EXPERT_HEAD = (
    "the action expert's LM head: pi0 never uses it (openpi does not even convert it from JAX)"
)


def action_head_rules(source: SourceTensors, keys: Pi0Keys) -> list[Rule]:
    """The flow head's Linears; pi0's time MLP also appears as ``time_mlp_*`` (lerobot renames
    those on load), read under either name."""
    pairs = [
        ("state_in", "state_proj"),
        ("action_in", "action_in_proj"),
        ("time_mlp.0", "action_time_mlp_in"),
        ("time_mlp.2", "action_time_mlp_out"),
        ("action_out", "action_out_proj"),
    ]
    rules = []
    for ours, theirs in pairs:
        name = keys.head(theirs)
        alias = keys.head(theirs.removeprefix("action_")) if "time_mlp" in theirs else name
        if f"{name}.weight" not in source and f"{alias}.weight" in source:
            name = alias
        for tensor in ("weight", "bias"):
            rules.append(Rule.rename(f"action_head.{ours}.{tensor}", f"{name}.{tensor}"))
    return rules


def f1_config(
    source: SourceTensors,
    keys: Pi0Keys,
    settings: Settings,
    *,
    generation: bool,
    generation_width: int,
    generation_mlp_width: int,
    vision_heads: int | None,
    pi05: bool = False,
) -> tuple[F1Config, list[str]]:
    """The F1 (No-Gen unless ``generation``) these pi0 weights fit, and notes for the record.
    ``pi05``: pi0.5's action expert (adaptive norms, no state token: its state is in the
    prompt)."""
    name = "pi05" if pi05 else NAME
    trunk, notes = trunk_geometry(source, keys, settings)
    action_dim = shape_of(source, keys.head("action_in_proj.weight"), "the action dim")[1]
    dims = [("max_action_dim", settings.max_action_dim, "action_in_proj", action_dim)]
    state_dim = None
    if pi05:
        trunk["action"]["norm"] = "adaptive"
    else:
        state_dim = shape_of(source, keys.head("state_proj.weight"), "the state dim")[1]
        dims.append(("max_state_dim", settings.max_state_dim, "state_proj", state_dim))
    problems = [
        f"config.json {field} {stated}, but {tensor} takes {found}"
        for field, stated, tensor, found in dims
        if stated is not None and int(stated) != found
    ]
    if problems:
        raise WeightImportError(f"{name}: {source.path}:\n  " + "\n  ".join(problems))
    small = {"width": generation_width, "mlp_width": generation_mlp_width, "mlp": "geglu"}
    vision = siglip_args(source, keys.paligemma.vision, vision_heads, settings.image_resolution)
    text_args = {"path": "tokenizer", "max_length": settings.text_length, "append_eos": False}
    data = {
        "vision": {"name": "siglip", "args": vision},
        "text": {"name": "hf", "args": text_args},
        "text_vocab": source.shape(keys.embed)[0],
        "trunk": {**trunk, "generation": small if generation else None},
        "generation": {"tokenizer": {"preset": "var_256"}} if generation else None,
        "action": {
            "action_dim": action_dim,
            "state_dim": state_dim,
            "chunk": settings.chunk,
            "execute": settings.execute,
            "solver": {"name": "euler", "args": {"steps": settings.steps}},
            "time_sampler": {
                "name": "beta",
                "args": {"alpha": settings.alpha, "beta": settings.beta, "scale": settings.scale},
            },
            "weights_convention": "pi0",
        },
    }
    try:
        return F1Config.model_validate(data), notes
    except ValueError as err:
        message = f"{name}: {source.path}: no F1 fits this checkpoint:\n{err}"
        raise WeightImportError(message) from err


def paligemma_part(
    config: F1Config, keys: Pi0Keys, expert_head_reason: str
) -> tuple[list[Rule], dict[str, str]]:
    """The rules of a pi0-family checkpoint's PaliGemma (the Understanding part, its embedding
    from ``keys.embed``) and the tensors dropped on purpose: both LM heads, a pooling head."""
    backbone = [
        k
        for k in expected_shapes(config, (UNDERSTANDING,))
        if k.startswith("understanding.vision.backbone.")
    ]
    embed_target = "understanding.text_embedding.embed.weight"
    rules = [
        r
        for r in understanding_rules(keys.paligemma, config.trunk.depth, backbone)
        if r.target != embed_target
    ]
    rules.append(Rule.rename(embed_target, keys.embed))
    vlm_head, expert_head = keys.lm_heads
    dropped = {
        vlm_head: DROPPED_VLM_HEAD,
        expert_head: expert_head_reason,
        re.escape(keys.paligemma.vision) + r"head\..+": DROPPED_POOLING,
    }
    return rules, dropped


def text_files(source: SourceTensors, text_tokenizer: str | Path | None) -> dict[str, Path]:
    """The tokenizer files to copy: ``text_tokenizer``'s, else those beside the weights."""
    if text_tokenizer:
        return tokenizer_files(Path(text_tokenizer))
    try:
        return tokenizer_files(source.root)
    except SourceError as err:
        raise SourceError(
            f"{NAME}: {source.root}: no tokenizer beside the weights; pi0 checkpoints (lerobot, "
            "openpi) do not carry PaliGemma's (google/paligemma-3b-pt-224): pass "
            "text_tokenizer=<a local directory with its tokenizer files>"
        ) from err


@importer(NAME)
def import_pi0(
    source: SourceTensors,
    *,
    generation: bool = False,
    generation_width: int = 1024,
    generation_mlp_width: int = 4096,
    text_tokenizer: str | Path | None = None,
    vision_heads: int | None = None,
    chunk: int | None = None,
    text_max_length: int | None = None,
) -> Imported:
    """pi0's weights as F1's Understanding and Action parts (the module docstring has the map).

    generation: target a full F1 (its G of ``generation_width`` / ``generation_mlp_width`` and
    VAR's 256 px tokenizer start random) instead of the No-Gen F1 (pi0 itself).
    text_tokenizer: a local directory with PaliGemma's tokenizer files (required unless the
    checkpoint directory has them). vision_heads: SigLIP's head count, needed only for towers
    other than So400m. chunk / text_max_length: for checkpoints whose config.json does not
    state them (openpi: the prompt length; no config at all: the chunk too).

    Example:
        >>> convert_checkpoint("pi0", "/models/pi0_base", "weights/pi0-f1kit",
        ...                    text_tokenizer="/models/paligemma-3b-pt-224")
    """
    keys = Pi0Keys.detect(source)
    data = source.read_json("config.json", required=False)
    check_not_pi05(source, keys, data)
    settings = read_settings(source, data, chunk, text_max_length)
    files = text_files(source, text_tokenizer)
    config, notes = f1_config(
        source,
        keys,
        settings,
        generation=generation,
        generation_width=generation_width,
        generation_mlp_width=generation_mlp_width,
        vision_heads=vision_heads,
    )
    parts = (UNDERSTANDING, ACTION)
    rules, dropped = paligemma_part(config, keys, DROPPED_EXPERT_HEAD)
    rules += gemma_decoder_rules(keys.expert, config.trunk.depth, ACTION)
    rules += action_head_rules(source, keys)
    info = {
        "layout": keys.layout,
        "config": settings.origin,
        "embedding": keys.embed,
        "prompt": "the task followed by '\\n'; BOS added, no EOS, padded (pi0's processor)",
        **({"variant_notes": notes} if notes else {}),
        **({"source_config": settings.kept} if settings.kept else {}),
    }
    return imported_from_plan(source, config, parts, rules, dropped, NAME, files=files, info=info)
