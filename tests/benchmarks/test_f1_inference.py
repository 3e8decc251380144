"""benchmarks/f1_inference.py: its records add up and describe the model it ran.

`test_benchmarks_run.py` already runs every script in --quick mode for well-formed JSON; these
tests read the F1 script's figures: every phase of both variants present, the totals consistent
with their phases and with the No-Gen peer, the token counts those of `F1Config.tiny()`, and the
phased path reproducing `F1.predict` exactly. Never speed.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from f1kit.model import F1Config

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "f1_inference.py"
CAMERAS = 2  # not a default count, so the flag is seen to reach the model


def _run(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=BENCHMARKS,
    )


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    # Compiled with dynamo's eager backend: the capture and the records, not inductor's minutes.
    modes = ("--modes", "eager", "compiled", "--compile-backend", "eager")
    result = _run("--quick", "--device", "cpu", "--cameras", str(CAMERAS), *modes)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    return {r["name"]: r for r in lines}


def _expected_tokens(generation: bool) -> tuple[int, int]:
    """Prefix and whole-sequence token counts of the tiny model, from its config alone."""
    cfg = F1Config.tiny(generation=generation)
    vit = cfg.vision.args
    prefix = CAMERAS * (vit["image_size"] // vit["patch_size"]) ** 2 + cfg.text.args["max_length"]
    rest = 1 + cfg.action.chunk  # state token, then the chunk
    if cfg.generation is not None:
        scales = cfg.generation.tokenizer.vqvae_config().scales
        per_frame = [s * s for s in scales]
        history = sum(per_frame[1:])  # a frame's teacher-forcing inputs: scales 2..last
        rest += history + sum(per_frame[: cfg.generation.scales])  # SOS + inputs of scales 2..K
    return prefix, prefix + rest


def test_every_phase_of_both_variants_is_reported(records: dict[str, dict]) -> None:
    base = f"f1_inference/tiny/eager/{{}}/v{CAMERAS}/"
    expected = {base.format("no_gen") + p for p in ("prefix", "foresight", "action", "total")}
    expected |= {
        base.format("f1") + p for p in ("history_codes", "prefix", "foresight", "action", "total")
    }
    expected |= {name.replace("/eager/", "/compiled/") for name in expected}
    assert set(records) == expected
    assert all(r["threads"] == 1 and r["dtype"] == "float32" for r in records.values())


@pytest.mark.parametrize("variant", ["f1", "no_gen"])
def test_total_adds_up_its_phases_and_reproduces_predict(
    records: dict[str, dict], variant: str
) -> None:
    name = f"f1_inference/tiny/eager/{variant}/v{CAMERAS}"
    total = records[f"{name}/total"]
    phases = {p: records[f"{name}/{p}"]["median_ms"] for p in total["phases_ms"]}
    assert total["phases_ms"] == phases
    assert math.isclose(total["sum_of_phases_ms"], sum(phases.values()))
    assert total["matches_predict"] is True
    assert total["host_syncs"] == 0, total["host_sync_sites"]
    assert total["mode"] == "eager" and total["graph_breaks"] == 0
    assert math.isclose(total["chunks_per_s"], 1e3 / total["median_ms"])
    for phase, ms in phases.items():
        assert math.isclose(records[f"{name}/{phase}"]["share_of_total"], ms / total["median_ms"])
    prefix, sequence = _expected_tokens(generation=variant == "f1")
    assert total["shapes"]["cameras"] == CAMERAS
    assert total["shapes"]["prefix_tokens"] == prefix
    assert total["shapes"]["sequence_tokens"] == sequence


def test_f1_total_carries_the_no_gen_peer_of_the_same_run(records: dict[str, dict]) -> None:
    f1 = records[f"f1_inference/tiny/eager/f1/v{CAMERAS}/total"]
    peer = records[f"f1_inference/tiny/eager/no_gen/v{CAMERAS}/total"]
    assert f1["peer"] == "no_gen"
    assert f1["peer_median_ms"] == peer["median_ms"]
    assert math.isclose(f1["f1_over_no_gen"], f1["median_ms"] / peer["median_ms"])
    assert "peer" not in peer  # the peer has no peer of its own
    # F1 carries a generation expert, aggregator and tokenizer on top of the same U and A.
    assert f1["shapes"]["params"] > peer["shapes"]["params"]
    assert f1["weights_mb"] > peer["weights_mb"]
    foresight = records[f"f1_inference/tiny/eager/f1/v{CAMERAS}/foresight"]
    start = records[f"f1_inference/tiny/eager/no_gen/v{CAMERAS}/foresight"]
    assert foresight["peer"] == "no_gen/start"
    assert foresight["peer_median_ms"] == start["median_ms"]


def test_paper_size_without_cuda_exits_with_a_clear_message() -> None:
    result = _run("--size", "paper", "--device", "cpu")
    assert result.returncode != 0
    assert "--size paper: needs a CUDA device" in result.stderr
    assert not result.stdout.strip()  # refused before building or timing anything


@pytest.mark.parametrize("variant", ["f1", "no_gen"])
def test_compiled_mode_reports_its_graphs_and_the_eager_figure(
    records: dict[str, dict], variant: str
) -> None:
    compiled = records[f"f1_inference/tiny/compiled/{variant}/v{CAMERAS}/total"]
    eager = records[f"f1_inference/tiny/eager/{variant}/v{CAMERAS}/total"]
    assert compiled["mode"] == "compiled" and compiled["matches_predict"] is True
    assert compiled["graph_breaks"] == 0 and compiled["host_syncs"] == 0
    # prefix + flow step (+ one per scale after the first, which rides the prefix pass)
    scales = compiled["shapes"]["scales"]
    assert compiled["graphs"] == 2 + max(0, scales - 1)
    assert compiled["eager_median_ms"] == eager["median_ms"]
    assert math.isclose(compiled["speedup_over_eager"], eager["median_ms"] / compiled["median_ms"])
