"""Training metrics: one JSON object per logged step in ``metrics.jsonl``, and TensorBoard scalars
under ``tb/`` when ``torch.utils.tensorboard`` imports (it needs the optional ``tensorboard``
package, which f1kit does not depend on).

A resumed stage continues the same file: records after the resumed step (written by the killed run
after its last checkpoint, possibly a torn last line) are dropped first, so every step appears once.
"""

import json
import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)


def read_metrics(path: Path) -> list[dict]:
    """Every complete record of a metrics file, in order (a torn last line is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only records with ``step <= last_step`` (atomically rewritten)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r["step"] <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


def _open_tensorboard(log_dir: Path, purge_step: int | None) -> object | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.debug("tensorboard is not installed; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class MetricsLog:
    """Appends metric records; ``resume_step`` (the step a run resumed from) drops later records,
    ``None`` starts a new file."""

    def __init__(self, out_dir: Path, resume_step: int | None = None) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "metrics.jsonl"
        if resume_step is None:
            self.path.write_text("")
        else:
            truncate_metrics(self.path, resume_step)
        self._file = open(self.path, "a")  # noqa: SIM115 (closed in close())
        purge = None if resume_step is None else resume_step + 1
        self._tb = _open_tensorboard(out_dir / "tb", purge)

    def write(self, record: dict) -> None:
        """Write one record (``step`` required; non-finite numbers become null in JSON)."""
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if (
                    key != "step"
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
