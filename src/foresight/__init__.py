"""foresight: VAR's multi-scale residual VQ-VAE tokenizer for F1's foresight (DESIGN.md s3)."""

from foresight.phi import PhiBank, phi_index, phi_ticks
from foresight.quantizer import MultiScaleQuantizer, QuantizerOutput
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
    "MultiScaleQuantizer",
    "MultiScaleVQVAE",
    "PhiBank",
    "QuantizerOutput",
    "TokenizerTrainConfig",
    "VARWeightsError",
    "VQVAEConfig",
    "VQVAEOutput",
    "code_statistics",
    "from_var",
    "load_var_state_dict",
    "ours_to_var",
    "phi_index",
    "phi_ticks",
    "read_var_checkpoint",
    "train_tokenizer",
    "var_config",
    "var_to_ours",
]
