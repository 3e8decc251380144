"""Robot datasets in the LeRobotDataset v3.0 layout, F1's training window and weighted sampling."""

from f1kit.data.metadata import DatasetMetadata, read_metadata
from f1kit.data.processor import (
    EMBODIMENT,
    POSTPROCESSOR,
    PREPROCESSOR,
    NormalizeStep,
    Processor,
    ProcessorError,
    UnnormalizeStep,
    embodiment_ids,
    make_processors,
)
from f1kit.data.reader import DatasetFormatError, RobotDataset, read_dataset
from f1kit.data.sampling import PI0_ALPHA, WeightedGroupSampler, group_weights
from f1kit.data.split import episode_ids, held_out_episodes, held_out_rows
from f1kit.data.stats import image_stats, numeric_stats
from f1kit.data.video import decode_mp4, decode_png, encode_mp4, encode_png, has_video_codec
from f1kit.data.window import WindowConfig, WindowedDataset
from f1kit.data.writer import Episode, write_dataset

__all__ = [
    "EMBODIMENT",
    "PI0_ALPHA",
    "POSTPROCESSOR",
    "PREPROCESSOR",
    "DatasetFormatError",
    "DatasetMetadata",
    "Episode",
    "NormalizeStep",
    "Processor",
    "ProcessorError",
    "RobotDataset",
    "UnnormalizeStep",
    "WeightedGroupSampler",
    "WindowConfig",
    "WindowedDataset",
    "decode_mp4",
    "decode_png",
    "embodiment_ids",
    "encode_mp4",
    "encode_png",
    "episode_ids",
    "group_weights",
    "has_video_codec",
    "held_out_episodes",
    "held_out_rows",
    "image_stats",
    "make_processors",
    "numeric_stats",
    "read_dataset",
    "read_metadata",
    "write_dataset",
]
