"""The building blocks of recipe sections: typed numbers, names, the base section, and the two
errors a recipe can raise (each problem with its key path)."""

import reprlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from f1kit.sim import resolve_tasks

# A problem's key path and message are cut to these lengths (a backstop: the messages cut the
# values they quote to ~80 characters, see `short_repr`).
MAX_PATH_CHARS = 200
MAX_MESSAGE_CHARS = 2000


class RecipeError(ValueError):
    """An invalid recipe: ``problems`` are (key path, message); str() gives one line each as
    ``<source>: <key.path>: <message>``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = [(_cut(p, MAX_PATH_CHARS), _cut(m, MAX_MESSAGE_CHARS)) for p, m in problems]
        lines = [f"{source}: {p}: {m}" if p else f"{source}: {m}" for p, m in self.problems]
        super().__init__("\n".join(lines))


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, in time bounded by ``limit`` whatever the
    value: a YAML alias bomb holds 9**9 strings, a plain repr would build all of them first."""
    return _cut(_BOUNDED.repr(value), limit)


class _BoundedRepr(reprlib.Repr):
    """reprlib's repr (a few items per level, a few levels) without its unbounded cases."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:  # str() of a huge int is quadratic, and refused past 4300 digits
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_BOUNDED = _BoundedRepr()
_BOUNDED.maxlevel, _BOUNDED.maxstring, _BOUNDED.maxother = 4, 90, 90
_BOUNDED.maxlist = _BOUNDED.maxtuple = _BOUNDED.maxdict = _BOUNDED.maxset = 8


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Problems(ValueError):
    """Several problems found by one validator, each with its key path relative to the section
    it validates (pydantic keeps this exception in the error's ``ctx``; the loader expands it)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in self.problems))


def _not_bool(value: Any) -> Any:
    # bool is an int subclass and pydantic's lax mode turns `true` into 1: `steps: true` is a typo.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Real = Annotated[float, BeforeValidator(_not_bool)]
Count = Annotated[Int, Field(gt=0)]
NonNegative = Annotated[Int, Field(ge=0)]
Rate = Annotated[Real, Field(gt=0)]
Weight = Annotated[Real, Field(ge=0)]
# Names become directory names in the run folder.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
Expert = Literal["understanding", "generation", "action"]


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are immutable, no NaN/inf."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def check_tasks(value: list[str] | str | None) -> list[str] | str | None:
    if value is not None:
        resolve_tasks(value)  # kept as written ("MT10" stays readable in the resolved recipe)
    return value
