import pytest

from f1kit.train import TrainSettings


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("steps", 0, ValueError),
        ("steps", True, TypeError),
        ("batch_size", 2.0, TypeError),
        ("lr", 0.0, ValueError),
        ("lr", float("nan"), ValueError),
        ("betas", (0.9,), ValueError),
        ("betas", (0.9, 1.0), ValueError),
        ("weight_decay", -0.1, ValueError),
        ("warmup_steps", 11, ValueError),
        ("schedule", "linear", ValueError),
        ("min_lr_ratio", 1.5, ValueError),
        ("grad_clip", 0.0, ValueError),
        ("precision", "fp16", ValueError),
        ("seed", -1, ValueError),
        ("checkpoint_every", 0, ValueError),
        ("log_every", 0, ValueError),
        ("num_workers", -1, ValueError),
        ("find_unused_parameters", 1, TypeError),
    ],
)
def test_bad_values_name_the_field(field: str, value: object, error: type) -> None:
    # Under the tests' jaxtyping hook the constructor type-checks annotations first, and its
    # message lists every field; run the validation itself to check our own message.
    settings = TrainSettings(steps=10, batch_size=4)
    object.__setattr__(settings, field, value)
    with pytest.raises(error, match=f"^{field}"):
        settings.__post_init__()
    with pytest.raises((ValueError, TypeError)):
        TrainSettings(**{"steps": 10, "batch_size": 4, field: value})


def test_yaml_lists_become_tuples_and_defaults_are_valid() -> None:
    s = TrainSettings(steps=10, batch_size=4, grad_clip=None)
    object.__setattr__(s, "betas", [0.8, 0.9])  # what a YAML loader gives, past the type hook
    s.__post_init__()
    assert s.betas == (0.8, 0.9)
    assert isinstance(s.betas, tuple)
    assert hash(s) == hash(TrainSettings(steps=10, batch_size=4, betas=(0.8, 0.9), grad_clip=None))


def test_global_batch_splits_over_ranks() -> None:
    s = TrainSettings(steps=1, batch_size=12)
    assert [s.local_batch_size(w) for w in (1, 2, 3, 4)] == [12, 6, 4, 3]
    with pytest.raises(ValueError, match=r"batch_size.*5 ranks"):
        s.local_batch_size(5)
