"""pi0.5 (lerobot's ``PI05Policy``, openpi's PyTorch ``pi05`` files) as F1: No-Gen by default.

pi0.5 is pi0 (`importers.pi0`) with three changes to the action expert, each with its place in
f1kit:

* **Adaptive norms.** Every expert RMSNorm (input, post-attention, final) is
  ``Linear(W -> 3W)`` of a time vector giving scale, shift and a gate; the gate multiplies the
  attention and MLP branches (the final norm's is unused). f1kit's Action expert gets
  ``norm: adaptive`` (`mot.AdaptiveRMSNorm`, the same formula: ``rms(x) * (1 + scale) + shift``
  in float32), the dense layers copied as they are (no ``+1``: both add the 1 in the formula).
* **Time only through the norms.** ``cond = silu(time_mlp_out(silu(time_mlp_in(sincos(t)))))``
  and the action tokens are ``action_in_proj(x_t)`` alone: `flow.FlowMatchingHead` with
  ``conditioning="adanorm"``, whose time MLP is exactly that (Linear, SiLU, Linear, SiLU).
* **No state token.** ``action.state_dim: null``: the state is in the prompt, which the caller
  writes (`importers.pi05_prompt`: ``"Task: ..., State: <256-bin state>;\\nAction: "``).

The map, beyond pi0's PaliGemma part:

    gemma_expert layers: attention, MLP         -> trunk experts.action (as pi0)
    input_layernorm.dense                       -> experts.action.attn_norm.dense
    post_attention_layernorm.dense              -> experts.action.mlp_norm.dense
    gemma_expert norm.dense                     -> trunk final_norms.action.dense
    action_in_proj / action_out_proj            -> action_head.action_in / action_out
    time_mlp_in / time_mlp_out                  -> action_head.time_mlp.0 / .2

``time_mlp_*`` is also read under pi0's name ``action_time_mlp_*`` (lerobot renames it on load).
The flow time keeps pi0's convention (``weights_convention: pi0``); dropped on purpose: the two
LM heads and a SigLIP pooling head, as for pi0. Text: PaliGemma's tokenizer from a local
directory (``text_tokenizer``), BOS, no EOS, padded to ``tokenizer_max_length`` (200 by default).
"""

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from attention import ACTION, UNDERSTANDING
from f1kit.model.importers.mapping import Rule, WeightImportError
from f1kit.model.importers.paligemma import (
    GEMMA_LAYER,
)
from f1kit.model.importers.pi0 import DROPPED_EXPERT_HEAD, f1_config, paligemma_part, text_files
from f1kit.model.importers.pi0_checkpoint import (
    Pi0Keys,
    read_settings,
)
from f1kit.model.importers.registry import Imported, imported_from_plan, importer
from f1kit.model.importers.source import SourceTensors

NAME = "pi05"
PI05_TEXT = 200
"""openpi's and lerobot's prompt length for pi0.5 (the state is in the prompt)."""
NORMS = (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm"))
PROMPT = (
    "'Task: {task}, State: {256-bin normalised state};\\nAction: ' "
    "(importers.pi05_prompt); BOS added, no EOS, padded"
)


def check_pi05(source: SourceTensors, keys: Pi0Keys, data: dict[str, Any] | None) -> None:
    """A pi0.5 by its config (lerobot's ``type``) and its tensors: adaptive expert norms, no
    state projection; pi0 and other lerobot policies are refused with the importer to use."""
    where = source.root / "config.json"
    kind = (data or {}).get("type")
    if kind == "pi0":
        raise WeightImportError(f"{NAME}: {where}: type pi0; convert it with --from pi0")
    if kind is not None and kind != "pi05":
        raise WeightImportError(f"{NAME}: {where}: type {kind!r}, expected 'pi05' (lerobot PI05)")
    names = source.keys()  # SourceTensors is not iterable
    plain = [
        k for k in names if k.startswith(keys.expert) and re.search(r"(layernorm|norm)\.weight$", k)
    ]
    state = keys.head("state_proj.weight")
    problems = []
    if plain:
        problems.append(f"plain (pi0) expert norms such as {plain[0]}")
    if state in source:
        problems.append(f"{state} (pi0's state token)")
    if not any(k.startswith(keys.expert) and ".dense." in k for k in names):
        problems.append(f"no adaptive norm under {keys.expert} (layers.i.input_layernorm.dense)")
    if problems:
        raise WeightImportError(
            f"{NAME}: {source.path} is not a pi0.5 checkpoint (a pi0 one? --from pi0):\n  "
            + "\n  ".join(problems)
        )


def expert_rules(prefix: str, depth: int) -> list[Rule]:
    """The action expert: attention and MLP as pi0's, the adaptive norms' dense layers as is."""
    rules = []
    for i in range(depth):
        ours, theirs = f"trunk.layers.{i}.experts.{ACTION}.", f"{prefix}layers.{i}."
        for target, source, norm in GEMMA_LAYER:
            if not norm:
                rules.append(Rule.rename(ours + target, theirs + source))
        for target, source in NORMS:
            for tensor in ("weight", "bias"):
                rules.append(
                    Rule.rename(
                        f"{ours}{target}.dense.{tensor}", f"{theirs}{source}.dense.{tensor}"
                    )
                )
    for tensor in ("weight", "bias"):
        rules.append(
            Rule.rename(
                f"trunk.final_norms.{ACTION}.dense.{tensor}", f"{prefix}norm.dense.{tensor}"
            )
        )
    return rules


def head_rules(source: SourceTensors, keys: Pi0Keys) -> list[Rule]:
    """The flow head's Linears; the time MLP under pi0.5's name or pi0's ``action_`` one."""
    rules = []
    for ours, theirs in (
        ("action_in", "action_in_proj"),
        ("time_mlp.0", "time_mlp_in"),
        ("time_mlp.2", "time_mlp_out"),
        ("action_out", "action_out_proj"),
    ):
        name = keys.head(theirs)
        alias = keys.head(f"action_{theirs}")
        if f"{name}.weight" not in source and f"{alias}.weight" in source:
            name = alias
        for tensor in ("weight", "bias"):
            rules.append(Rule.rename(f"action_head.{ours}.{tensor}", f"{name}.{tensor}"))
    return rules


@importer(NAME)
def import_pi05(
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
    """pi0.5's weights as F1's Understanding and (adaptive) Action parts; options as
    `importers.pi0.import_pi0` (``text_max_length`` defaults to 200 without a lerobot config).

    Example:
        >>> convert_checkpoint("pi05", "/models/pi05_base", "weights/pi05-f1kit",
        ...                    text_tokenizer="/models/paligemma-3b-pt-224")
    """
    keys = Pi0Keys.detect(source)
    data = source.read_json("config.json", required=False)
    check_pi05(source, keys, data)
    lerobot = data is not None and "type" in data
    if lerobot and "tokenizer_max_length" not in data:  # PI05Config's default, not PI0Config's
        data = {**data, "tokenizer_max_length": PI05_TEXT}
    text = text_max_length if text_max_length is not None or lerobot else PI05_TEXT
    settings = read_settings(source, data, chunk, text)
    if lerobot:
        settings = replace(settings, origin="lerobot config.json (type pi05)")
    files = text_files(source, text_tokenizer)
    config, notes = f1_config(
        source,
        keys,
        settings,
        generation=generation,
        generation_width=generation_width,
        generation_mlp_width=generation_mlp_width,
        vision_heads=vision_heads,
        pi05=True,
    )
    parts = (UNDERSTANDING, ACTION)
    reason = DROPPED_EXPERT_HEAD.replace("pi0 never", "pi0.5 never")
    rules, dropped = paligemma_part(config, keys, reason)
    rules += expert_rules(keys.expert, config.trunk.depth)
    rules += head_rules(source, keys)
    info = {
        "layout": keys.layout,
        "config": settings.origin,
        "embedding": keys.embed,
        "prompt": PROMPT,
        "state": "none as a token: discretised into the prompt by the caller",
        **({"variant_notes": notes} if notes else {}),
        **({"source_config": settings.kept} if settings.kept else {}),
    }
    return imported_from_plan(source, config, parts, rules, dropped, NAME, files=files, info=info)
