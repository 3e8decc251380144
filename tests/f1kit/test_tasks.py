"""Task sets and instructions (f1kit.sim.tasks)."""

import pytest

from f1kit.sim import INSTRUCTIONS, MT10, MT50, instruction, resolve_tasks, task_of


def test_sets_have_the_benchmark_sizes_and_distinct_sentences() -> None:
    assert len(MT10) == 10 and len(MT50) == 50 and set(MT10) <= set(MT50)
    sentences = list(INSTRUCTIONS.values())
    assert len(set(sentences)) == 50 and all(len(s.split()) >= 3 for s in sentences)


def test_resolve_accepts_set_names_lists_and_comma_strings() -> None:
    assert resolve_tasks("MT10") == MT10
    assert resolve_tasks("reach-v3, push-v3") == ("reach-v3", "push-v3")
    assert resolve_tasks(["drawer-open-v3"]) == ("drawer-open-v3",)
    assert instruction("reach-v3") == INSTRUCTIONS["reach-v3"]


@pytest.mark.parametrize(
    ("tasks", "message"),
    [("reach-v2", "unknown"), ([], "at least one"), (["reach-v3", "reach-v3"], "duplicate")],
)
def test_resolve_rejects_bad_names(tasks: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_tasks(tasks)


@pytest.mark.sim
def test_sets_match_metaworld() -> None:
    env_dict = pytest.importorskip("metaworld.env_dict")
    assert set(MT50) == set(env_dict.ALL_V3_ENVIRONMENTS)
    assert tuple(env_dict.MT10_V3) == MT10


def test_task_of_inverts_the_instructions() -> None:
    for task in MT50:
        assert task_of(instruction(task)) == task
    assert task_of("fold the laundry") is None
