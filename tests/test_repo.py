"""Repository contracts: the README's Quickstart, CI's command, lint, the CLI entry point."""

import re
import subprocess
import sys
from pathlib import Path

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
