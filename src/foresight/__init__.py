"""foresight: VAR's multi-scale residual VQ-VAE tokenizer for F1's foresight (DESIGN.md s3)."""

from foresight.aggregator import TemporalAggregator
from foresight.default_network import (
    CacheError,
    DefaultTransformer,
    TransformerCache,
    TransformerConfig,
)
from foresight.generation import GenerationOutput
from foresight.generator import GeneratorLoss, NextScaleGenerator
from foresight.network import TokenNetwork
from foresight.next_scale_config import NextScaleConfig
from foresight.phi import PhiBank, phi_index, phi_ticks
from foresight.quality import FrameQuality, future_pairs, tokenizer_quality
from foresight.quantizer import MultiScaleQuantizer, QuantizerOutput
from foresight.sampling import filter_logits, sample_tokens, token_uniforms
from foresight.scales import IncrementalScaleTokenizer, ScaleTokenizer
from foresight.tokenizer_training import TokenizerTrainConfig, code_statistics, train_tokenizer
from foresight.var_weights import (
    VARWeightsError,
    from_var,
    load_var_state_dict,
    ours_to_var,
    read_var_checkpoint,
    var_config,
    var_to_ours,
)
from foresight.vqvae import MultiScaleVQVAE, VQVAEConfig, VQVAEOutput

__all__ = [
    "CacheError",
    "DefaultTransformer",
    "FrameQuality",
    "GenerationOutput",
    "GeneratorLoss",
    "IncrementalScaleTokenizer",
    "MultiScaleQuantizer",
    "MultiScaleVQVAE",
    "NextScaleConfig",
    "NextScaleGenerator",
    "PhiBank",
    "QuantizerOutput",
    "ScaleTokenizer",
    "TemporalAggregator",
    "TokenNetwork",
    "TokenizerTrainConfig",
    "TransformerCache",
    "TransformerConfig",
    "VARWeightsError",
    "VQVAEConfig",
    "VQVAEOutput",
    "code_statistics",
    "filter_logits",
    "from_var",
    "future_pairs",
    "load_var_state_dict",
    "ours_to_var",
    "phi_index",
    "phi_ticks",
    "read_var_checkpoint",
    "sample_tokens",
    "token_uniforms",
    "tokenizer_quality",
    "train_tokenizer",
    "var_config",
    "var_to_ours",
]
