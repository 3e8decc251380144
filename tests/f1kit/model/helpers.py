"""A micro F1 (fast under the type-checking hook) and random batches for the model tests."""

import torch

from f1kit.model import F1, F1Config

MICRO_TOKENIZER = {
    "preset": "small_64",
    "overrides": {
        "channels": 16,
        "norm_groups": 8,
        "vocab_size": 64,
        "attention": False,
        "mid_attention": False,
    },
}


def micro_config(generation: bool = True, overrides: dict | None = None) -> F1Config:
    """Tiny everything: 32 px ViT (4 tokens per camera), 8 text tokens, 2-layer trunk."""
    base: dict = {
        "vision": {
            "name": "vit",
            "args": {
                "image_size": 32,
                "patch_size": 16,
                "width": 32,
                "depth": 1,
                "heads": 2,
                "mlp_width": 64,
            },
        },
        "text": {"name": "bytes", "args": {"max_length": 8}},
        "trunk": {
            "depth": 2,
            "heads": 2,
            "kv_heads": 1,
            "head_dim": 8,
            "understanding": {"width": 32, "mlp_width": 64},
            "generation": {"width": 24, "mlp_width": 48} if generation else None,
            "action": {"width": 16, "mlp_width": 32},
        },
        "action": {"action_dim": 4, "state_dim": 4, "chunk": 3, "execute": 2},
    }
    if generation:
        base["generation"] = {"tokenizer": MICRO_TOKENIZER, "top_k": 16}
    return F1Config.tiny(generation, {**base, **(overrides or {})})


def micro_model(generation: bool = True, seed: int = 0) -> F1:
    torch.manual_seed(seed)
    return F1(micro_config(generation))


def random_batch(
    b: int = 2, seed: int = 0, cameras: int = 1, generation: bool = True, codes: bool = True
) -> dict:
    """A training batch; ``codes``: precomputed random tokenizer codes (30 per frame, 64 codes)
    instead of history / foresight frames (skips the tokenizer's convolutions)."""
    g = torch.Generator().manual_seed(seed)

    def frames(*shape: int) -> torch.Tensor:
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)

    batch = {
        "images": frames(b, cameras, 3, 64, 64),
        "state": torch.randn(b, 4, generator=g),
        "action": torch.randn(b, 3, 4, generator=g),
        "action_is_pad": torch.zeros(b, 3, dtype=torch.bool),
        "task": ["reach the red goal", "open"][:b] + ["press"] * max(0, b - 2),
    }
    if generation and codes:
        batch["history_codes"] = torch.randint(0, 64, (b, 4, 30), generator=g)
        batch["foresight_codes"] = torch.randint(0, 64, (b, 30), generator=g)
    elif generation:
        batch["history"] = frames(b, 4, cameras, 3, 64, 64)
        batch["foresight"] = frames(b, cameras, 3, 64, 64)
    return batch
