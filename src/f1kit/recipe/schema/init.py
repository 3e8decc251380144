"""``init_from``: start the recipe's model (``model.init_from``) or one train stage
(``stages.N.init_from``) from an f1kit model directory (``f1kit convert``) or a saved policy.

    init_from: weights/pi0-f1kit                   # the directory holds every part of the model
    init_from: {path: weights/pi0-f1kit, random: [generation]}   # pi0 has no Generation expert

``random`` names the parts of the model the directory does not hold; they keep their fresh
initialisation. A part it lacks and ``random`` does not name is an error at the start of the
run, so a partial import never passes for a whole one (docs/weights.md).
"""

from typing import Any, Literal

from pydantic import Field, model_validator

from f1kit.model import F1Config
from f1kit.recipe.fields import Section

Part = Literal["understanding", "generation", "action", "tokenizer"]


class InitFrom(Section):
    """A model directory (or saved policy) and the parts of the model that start random."""

    path: str
    random: list[Part] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


class RecipeModel(F1Config):
    """The recipe's ``model:`` section: an `F1Config` plus where its weights start."""

    init_from: InitFrom | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_f1_config(cls, value: Any) -> Any:
        # Python callers pass an F1Config (F1Config.tiny()): the same section, no init_from.
        if isinstance(value, F1Config) and not isinstance(value, RecipeModel):
            return value.model_dump()
        return value

    def f1_config(self) -> F1Config:
        """The model config alone (what a saved policy records)."""
        return F1Config.model_validate(self.model_dump(exclude={"init_from"}))
