"""Repository contracts: the README's Quickstart, CI's command, lint, the CLI entry point."""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from f1kit.cli import app

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README Quickstart has no bash block"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_quickstart_has_two_commands_and_ci_runs_the_test_one() -> None:
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = re.search(r"^TEST_COMMAND='(.*)'$", ci, re.M)
    assert ci_command, ".ci/run defines no TEST_COMMAND"
    assert ci_command.group(1) == commands[1]
    assert "pytest" in commands[1] and "venv" in commands[1]


def test_ci_treats_no_tests_as_failure() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert '"$status" -eq 5' in ci and "exit 1" in ci


def test_ruff_is_clean() -> None:
    paths = ["src", "tests", "benchmarks"]
    check = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout[-3000:]
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout[-3000:]


def test_cli_prints_the_uga_layout_and_mask() -> None:
    result = CliRunner().invoke(
        app, ["layout", "--prefix", "2", "--history", "1", "--scales", "1,2", "--actions", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "11 tokens, 5 blocks" in result.output
    rows = [ln for ln in result.output.splitlines() if re.fullmatch(r"[UGA]  [#.]+", ln)]
    assert len(rows) == 11
    # the first prefix row sees prefix + merged history only; the last action row sees everything
    assert rows[0].endswith("###........")
    assert rows[-1].endswith("#" * 11)


def test_cli_rejects_bad_scales_with_a_clear_message() -> None:
    result = CliRunner().invoke(app, ["layout", "--scales", "1,x"])
    assert result.exit_code != 0
    assert "comma-separated ints" in result.output
    result = CliRunner().invoke(app, ["layout", "--scales", "2,3"])
    assert result.exit_code != 0


def test_cli_demos_writes_a_dataset_and_eval_expert_reports(tmp_path: Path) -> None:
    import f1kit.sim  # noqa: F401  (sets MUJOCO_GL before mujoco loads)
    from f1kit.data import read_dataset

    out = tmp_path / "demos"
    result = CliRunner().invoke(
        app, ["demos", str(out), "--tasks", "reach-v3", "--episodes", "1", "--size", "32"]
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"reach-v3\s+kept\s+1", result.output)
    dataset = read_dataset(out)
    assert dataset.episode_bounds.shape[0] == 1
    again = CliRunner().invoke(app, ["demos", str(out), "--tasks", "reach-v3", "--episodes", "1"])
    assert again.exit_code != 0  # refuses to overwrite without --overwrite
    bad = CliRunner().invoke(app, ["demos", str(out), "--tasks", "reach-v9"])
    assert bad.exit_code != 0 and "unknown Meta-World v3 task" in bad.output

    result = CliRunner().invoke(app, ["eval-expert", "--tasks", "reach-v3", "--episodes", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["tasks"]["reach-v3"]["episodes"] == 2
    assert report["tasks"]["reach-v3"]["rate"] >= 0.5


def test_readme_recipe_example_is_a_valid_recipe() -> None:
    from f1kit.recipe import recipe_from_dict

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "README Recipes section has no yaml block"
    recipe = recipe_from_dict(yaml.safe_load(block.group(1)), "README.md")
    assert [s.kind for s in recipe.stages] == ["tokenizer", "train", "train", "evaluate"]
