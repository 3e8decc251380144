"""The suite runs with jaxtyping + beartype checking every annotated call in our packages."""

import importlib

import pytest
import torch
from jaxtyping import TypeCheckError

from attention import attend, block_rule_mask
from tests.conftest import PACKAGES


def test_every_package_is_importable_and_hooked() -> None:
    for name in PACKAGES:
        module = importlib.import_module(name)
        assert module.__spec__ is not None
        # the jaxtyping import hook rewrites the module's source; its loader says so
        assert "jaxtyping" in type(module.__spec__.loader).__module__, name


def test_wrong_dtype_is_caught_at_call_time() -> None:
    blocks = torch.zeros(3, dtype=torch.long)
    with pytest.raises(TypeCheckError, match="q_blocks"):
        block_rule_mask(blocks.float(), blocks)


def test_inconsistent_shapes_are_caught_at_call_time() -> None:
    q = torch.randn(1, 2, 4, 8)
    k = torch.randn(1, 1, 4, 16)  # head_dim 16 against the queries' 8
    with pytest.raises(TypeCheckError):
        attend(q, k, k, None)
    # and the same call with consistent shapes goes through
    assert attend(q, k[..., :8], k[..., :8], None).shape == q.shape
