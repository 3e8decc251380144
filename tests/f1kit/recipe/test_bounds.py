"""What a recipe may ask for: bounded files and alias expansion (a clear error in well under a
second, never a MemoryError), bounded error messages, well-formed paths and output templates, and
batch sizes whose inputs could fit in memory."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from f1kit.recipe import RecipeError, apply_overrides, parse_yaml, recipe_from_dict
from tests.f1kit.recipe.helpers import problems, toy

ROOT = Path(__file__).resolve().parents[3]
MICRO = (Path(__file__).parent / "micro.yaml").read_text()


def billion_laughs(levels: int = 9) -> str:
    """A YAML value of ~2 KB whose aliases expand to 9**levels strings."""
    value = "&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"
    for i in range(1, levels):
        value = f"&a{i} [{value}, " + ", ".join([f"*a{i - 1}"] * 8) + "]"
    return value


def timed(snippet: str, timeout: float = 60) -> tuple[float, str]:
    """Runs ``snippet`` in a fresh interpreter (a runaway stays out of the test process); returns
    (seconds the snippet itself took, its stdout + stderr)."""
    script = (
        "import time\nfrom f1kit.recipe import RecipeError, load_recipe, parse_yaml\n"
        "start = time.perf_counter()\n"
        f"{textwrap.dedent(snippet)}\n"
        "print('SECONDS', time.perf_counter() - start)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-2000:]
    seconds = float(output.split("SECONDS ")[-1].split()[0])
    return seconds, output


LOAD = """
try:
    load_recipe({path!r})
except RecipeError as err:
    message = str(err)
    print(len(err.problems), 'problems,', len(message), 'chars')
    print(message[:1000])
"""


# ---- the file and its aliases ------------------------------------------------------------------


def test_an_alias_bomb_in_a_typed_field_is_refused_in_under_a_second(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(MICRO.replace("seed: 0\n", f"seed: {billion_laughs()}\n", 1))
    assert path.stat().st_size < 2500
    seconds, output = timed(LOAD.format(path=str(path)))
    assert "aliases expand" in output and "1 problems" in output, output[-2000:]
    assert seconds < 1.0, output[-2000:]


def test_a_huge_recipe_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(MICRO + "".join(f"k{i}: {i}\n" for i in range(130_000)))
    assert path.stat().st_size > 2**20
    seconds, output = timed(LOAD.format(path=str(path)))
    assert "1 problems" in output and "limit is 1 MiB" in output, output[-2000:]
    assert seconds < 1.0, output[-2000:]


def test_many_problems_are_listed_up_to_a_bound(tmp_path):
    # under the size bound, 40 000 unknown keys: a bounded list, quickly
    path = tmp_path / "wide.yaml"
    path.write_text(MICRO + "".join(f"k{i}: {i}\n" for i in range(40_000)))
    assert path.stat().st_size < 2**20
    seconds, output = timed(LOAD.format(path=str(path)))
    assert "101 problems" in output, output[-2000:]
    assert seconds < 5.0, output[-2000:]


def test_bounded_aliases_and_problem_lists_are_exact():
    from f1kit.recipe.loading import MAX_PROBLEMS
    from f1kit.recipe.yaml_io import MAX_YAML_NODES

    fine = "a: &x [1, 2, 3]\n" + "".join(f"b{i}: *x\n" for i in range(100))
    assert parse_yaml(fine)["b99"] == [1, 2, 3]  # aliases themselves are fine
    wide = "a: [" + ", ".join(["1"] * MAX_YAML_NODES) + "]"
    with pytest.raises(RecipeError, match="expand"):
        parse_yaml(wide)
    data = toy(**{f"k{i}": i for i in range(MAX_PROBLEMS + 5)})
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data)
    assert len(info.value.problems) == MAX_PROBLEMS + 1
    assert "and 5 more problems" in info.value.problems[-1][1]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: &a [*a]\n", ["aliases"]),
        ("seed: 1" + "0" * 5000 + "\n", ["not valid YAML", "digits"]),
    ],
)
def test_recursive_aliases_and_huge_numbers_are_recipe_errors(text, words):
    with pytest.raises(RecipeError) as info:
        parse_yaml(text, "r.yaml")
    for word in words:
        assert word in str(info.value), str(info.value)


def test_an_override_value_is_bounded_too():
    with pytest.raises(RecipeError) as info:
        apply_overrides(toy(), [f"description={billion_laughs(7)}"], "r.yaml")
    assert info.value.problems[0][0] == "description"
    assert "aliases expand" in info.value.problems[0][1]


def test_a_shared_structure_is_never_repr_whole():
    # built in Python (no YAML to bound it): 9**9 leaves reachable from a few objects
    seconds, output = timed(
        """
        from tests.f1kit.recipe.helpers import toy
        from f1kit.recipe import recipe_from_dict
        bomb = ['lol'] * 9
        for _ in range(8):
            bomb = [bomb] * 9
        try:
            recipe_from_dict(toy(seed=bomb))
        except RecipeError as err:
            print(err)
        """
    )
    line = next(x for x in output.splitlines() if "seed:" in x)
    assert "got [[[[" in line and len(line) < 200, line
    assert seconds < 1.0, output[-2000:]


def test_loading_errors_fit_a_line_whatever_the_value():
    long = "x" * 10_000
    for data in (toy(seed=long), toy(name=long), toy(**{long: 1}), toy(data={long: 1})):
        with pytest.raises(RecipeError) as info:
            recipe_from_dict(data)
        for path, message in info.value.problems:
            assert len(path) < 200 and len(message) < 400, (path[:300], message[:300])


# ---- paths and the output template -------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "where", "words"),
    [
        ({"output": "runs/{name:x}"}, "output", ["only {name}", "{name:x}"]),
        ({"output": "runs/{name!r}"}, "output", ["only {name}", "{name!r}"]),
        ({"output": "runs/a\0b"}, "output", ["control character", "\\x00"]),
        ({"output": "runs/a\nb"}, "output", ["control character", "\\n"]),
        (
            {"data": {"source": "lerobot", "paths": ["/d", "/e\x07"]}},
            "data.paths.1",
            ["control character", "\\x07"],
        ),
    ],
)
def test_paths_and_the_output_template_are_well_formed(changes, where, words):
    found = problems(toy(**changes))
    assert where in found, found
    for word in words:
        assert word in found[where], found[where]


def test_a_nul_in_a_model_path_is_named():
    data = toy()
    data["model"]["text"] = {"name": "hf", "args": {"path": "weights/\0gemma"}}
    found = problems(data)
    assert "control character" in found["model.text.args.path"], found


def test_well_formed_outputs_pass():
    for output in ("runs/{name}", "out/{name}/v2-{name}", "runs/{{literal}}/{name}", "runs/fixed"):
        assert recipe_from_dict(toy(output=output)).output == output


# ---- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [0, 1])
@pytest.mark.parametrize("size", [10**12, 1e12, 10**8])
def test_an_impossible_batch_is_refused_with_its_memory(stage, size):
    data = toy()
    data["stages"][stage]["batch_size"] = size
    found = problems(data)
    where = f"stages.{stage}.batch_size"
    assert where in found, found
    assert "TiB" in found[where] and "per sample" in found[where], found[where]


def test_a_large_possible_batch_passes():
    data = toy()
    data["stages"][1]["batch_size"] = 4096  # 64 px, one camera: ~200 MB of frames
    recipe_from_dict(data)
