"""Flow matching for action chunks: conventions, time samplers, solvers, head, normalisation,
real-time chunking."""

from flow.convention import Convention, adapt_velocity, convert_time, convert_velocity
from flow.head import FlowHeadConfig, FlowMatchingHead, VelocityNetwork
from flow.networks import AdaptiveLayerNorm, MLPVelocityNet, TransformerVelocityNet
from flow.normalize import NORM_MODES, Normalizer, NormMode
from flow.padding import pad_to_dim, unpad
from flow.rtc import SCHEDULES, RTCConfig, RTCGuide, guidance_weight, guided_velocity
from flow.solvers import (
    ADAPTIVE_METHODS,
    NATIVE_METHODS,
    TORCHDIFFEQ_METHODS,
    ODESolution,
    ODESolver,
    solve,
)
from flow.time_embedding import sinusoidal_time_features
from flow.time_sampling import (
    TIME_SAMPLERS,
    BetaTime,
    LogitNormalTime,
    TimeSampler,
    UniformTime,
    make_time_sampler,
)

__all__ = [
    "ADAPTIVE_METHODS",
    "NATIVE_METHODS",
    "NORM_MODES",
    "SCHEDULES",
    "TIME_SAMPLERS",
    "TORCHDIFFEQ_METHODS",
    "AdaptiveLayerNorm",
    "BetaTime",
    "Convention",
    "FlowHeadConfig",
    "FlowMatchingHead",
    "LogitNormalTime",
    "MLPVelocityNet",
    "NormMode",
    "Normalizer",
    "ODESolution",
    "ODESolver",
    "RTCConfig",
    "RTCGuide",
    "TimeSampler",
    "TransformerVelocityNet",
    "UniformTime",
    "VelocityNetwork",
    "adapt_velocity",
    "convert_time",
    "convert_velocity",
    "guidance_weight",
    "guided_velocity",
    "make_time_sampler",
    "pad_to_dim",
    "sinusoidal_time_features",
    "solve",
    "unpad",
]
