"""Mixture-of-Transformers trunk: expert specs, the MoT layer and stack, and its KV cache."""

from mot.adaptive_norm import AdaptiveRMSNorm
from mot.cache import KVCache, KVCacheError
from mot.config import (
    MLP_KINDS,
    NORM_KINDS,
    ExpertSpec,
    MLPKind,
    MoTConfig,
    MoTConfigError,
    NormKind,
    paper_config,
)
from mot.layer import ExpertBlock, MoTLayer
from mot.mlp import MLP
from mot.norm import RMSNorm
from mot.rope import apply_rope, rope_angles
from mot.stack import MoTStack
from mot.steps import check_step_end, step_inputs

__all__ = [
    "MLP",
    "MLP_KINDS",
    "NORM_KINDS",
    "AdaptiveRMSNorm",
    "ExpertBlock",
    "ExpertSpec",
    "KVCache",
    "KVCacheError",
    "MLPKind",
    "MoTConfig",
    "MoTConfigError",
    "MoTLayer",
    "MoTStack",
    "NormKind",
    "RMSNorm",
    "apply_rope",
    "check_step_end",
    "paper_config",
    "rope_angles",
    "step_inputs",
]
