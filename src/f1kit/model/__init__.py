"""The F1 model composed from the blocks, its configuration, and the policy API."""

from f1kit.model.config import (
    ActionConfig,
    Component,
    ExpertWidths,
    F1Config,
    GenerationConfig,
    TokenizerConfig,
    TrunkConfig,
)
from f1kit.model.f1 import F1, Prediction, Prefix
from f1kit.model.loading import (
    FP32_MODULES,
    LoadingError,
    build_empty,
    load_into_empty,
    load_model,
    read_weights,
)
from f1kit.model.objective import Objective
from f1kit.model.policy import F1Policy
from f1kit.model.pretrained import PretrainedError, load_pretrained, load_weights, save_pretrained
from f1kit.model.text import TEXT_TOKENIZERS, TextEmbedding, build_text_tokenizer
from f1kit.model.trunk import ActionExpert, BoundTrunk, GenerationExpert, JointPass
from f1kit.model.understanding import Understanding
from f1kit.model.vision import VISION_ENCODERS, build_vision_encoder

__all__ = [
    "F1",
    "FP32_MODULES",
    "TEXT_TOKENIZERS",
    "VISION_ENCODERS",
    "ActionConfig",
    "ActionExpert",
    "BoundTrunk",
    "Component",
    "ExpertWidths",
    "F1Config",
    "F1Policy",
    "GenerationConfig",
    "GenerationExpert",
    "JointPass",
    "LoadingError",
    "Objective",
    "Prediction",
    "Prefix",
    "PretrainedError",
    "TextEmbedding",
    "TokenizerConfig",
    "TrunkConfig",
    "Understanding",
    "build_empty",
    "build_text_tokenizer",
    "build_vision_encoder",
    "load_into_empty",
    "load_model",
    "load_pretrained",
    "load_weights",
    "read_weights",
    "save_pretrained",
]
