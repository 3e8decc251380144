"""The whole recipe: its name, seed, output, device, then the data, model and stages sections,
checked against each other (`f1kit.recipe.checks`) once each is valid on its own."""

import string
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from f1kit.recipe.fields import Count, Name, NonNegative, Problems, Section
from f1kit.recipe.schema.data import DataConfig
from f1kit.recipe.schema.init import RecipeModel
from f1kit.recipe.schema.parallel import ParallelConfig
from f1kit.recipe.schema.stages import Stage


class Recipe(Section):
    """A whole run: data, the model, and the stages run in order (DESIGN.md s5)."""

    name: Name
    description: str = ""
    seed: NonNegative = 0
    output: str = "runs/{name}"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Count | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    model: RecipeModel
    stages: list[Stage] = Field(min_length=1)

    @field_validator("output")
    @classmethod
    def _output_template(cls, value: str) -> str:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        if fields - {"name"} or not value.strip():
            raise ValueError(
                f"expected a directory path, optionally with {{name}}, got {value!r}"
                + (f" (unknown placeholders {sorted(fields - {'name'})})" if fields else "")
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        from f1kit.recipe.checks import recipe_problems  # the cross-section rules

        problems = recipe_problems(self)
        if problems:
            raise Problems(problems)
        return self

    def output_dir(self) -> Path:
        """The run directory: ``output`` with ``{name}`` filled in."""
        return Path(self.output.format(name=self.name))
