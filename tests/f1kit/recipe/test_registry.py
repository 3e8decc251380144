"""The stage registry: every stage kind of the schema has exactly one runner."""

import pytest

from f1kit.recipe.schema import STAGE_KINDS
from f1kit.recipe.stages import RUNNERS, register, runner


def test_every_stage_kind_has_a_runner() -> None:
    assert sorted(RUNNERS) == sorted(STAGE_KINDS)
    for kind in STAGE_KINDS:
        assert runner(kind) is RUNNERS[kind]


def test_a_kind_registers_once_and_an_unknown_kind_is_named() -> None:
    with pytest.raises(ValueError, match="'train': a runner is already registered"):
        register("train")(lambda ctx, stage, index, stage_dir: {})
    with pytest.raises(KeyError, match="'distill': no runner registered"):
        runner("distill")
