"""The stage progress bar (rich): step/steps, last logged loss, samples/s and time remaining."""

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class StageProgress:
    """A rich bar that stays on screen after the stage; a no-op when ``enabled`` is False."""

    def __init__(self, name: str, total: int, completed: int, enabled: bool) -> None:
        self._progress = None
        if not enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[throughput]} samples/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task(
            name, total=total, completed=completed, loss="-", throughput="-"
        )
        self._progress.start()

    def advance(self, loss: float | None = None, samples_per_s: float | None = None) -> None:
        """One step done; refresh the loss / throughput shown when given."""
        if self._progress is None:
            return
        fields = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4g}"
        if samples_per_s is not None:
            fields["throughput"] = f"{samples_per_s:.1f}"
        self._progress.update(self._task, advance=1, **fields)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
