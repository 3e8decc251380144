"""Every micro-benchmark runs in --quick mode and prints well-formed JSON lines.

Keeps the benchmarks from rotting as the blocks change; it checks their output, never their speed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# f1_inference.py runs (and its records are checked in depth) in test_f1_inference.py.
SCRIPTS = sorted(
    p for p in BENCHMARKS.glob("*.py") if p.name not in ("harness.py", "f1_inference.py")
)
REQUIRED = {"name", "device", "dtype", "torch", "date", "shapes"}
TIMED = {"median_ms", "min_ms", "max_ms", "iqr_ms", "repeats"}


def test_there_are_benchmarks() -> None:
    assert any(p.name == "attention_mask.py" for p in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_quick_run_prints_json(script: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=BENCHMARKS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert records, f"no JSON lines in output:\n{result.stdout[-2000:]}"
    timed = 0
    for record in records:
        assert record.keys() >= REQUIRED, record
        assert record["device"] == "cpu"
        if "skipped" in record:
            continue
        assert record.keys() >= TIMED, record
        assert record["median_ms"] > 0 and record["min_ms"] <= record["median_ms"]
        timed += 1
    assert timed > 0
