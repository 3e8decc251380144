"""``evaluate:`` of a train stage: what it measures during training and how it picks the weights.

Every ``every`` optimizer steps (and after the last) the stage scores the model on (see
`f1kit.recipe.stage_eval`):

* closed-loop success on ``episodes`` unseen Meta-World layouts per task, drawn from ``seed``,
  which must differ from the demos' seed and from every ``evaluate`` stage's seed: layouts that
  choose a checkpoint never score it;
* the stage's own loss on the held-out demo episodes (``data.validation`` per task);
* for models with a Generation expert, the foresight on those held-out windows: per-scale token
  accuracy, PSNR and the error on what moves, against the true frame at +h.

The best weights by ``select`` (success: highest; val_loss: lowest) become the stage's result and
the saved policy; ``patience`` stops the stage after that many evaluations without improvement.
"""

from typing import Literal

from pydantic import field_validator, model_validator

from f1kit.recipe.fields import Count, NonNegative, Problems, Section, check_tasks


class StageEvaluation(Section):
    every: Count
    episodes: NonNegative = 5  # closed-loop episodes per task (0: held-out scores only)
    seed: NonNegative = 5_000
    tasks: list[str] | str | None = None  # None: data.tasks
    max_steps: Count = 200
    validation_batches: Count = 4  # held-out batches of the stage's batch size
    foresight_samples: NonNegative = 48  # held-out windows whose foresight is drawn and scored
    select: Literal["success", "val_loss"] = "success"
    patience: Count | None = None

    _check_tasks = field_validator("tasks")(check_tasks)

    @model_validator(mode="after")
    def _selectable(self) -> "StageEvaluation":
        if self.select == "success" and self.episodes == 0:
            raise Problems([("select", "success needs episodes > 0 (closed-loop evaluation)")])
        return self
