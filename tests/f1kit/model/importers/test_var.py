"""VAR's tokenizer under `f1kit convert --from var`: a model directory holding the tokenizer."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from f1kit.cli import app
from f1kit.model import F1, F1Config
from f1kit.model.importers import convert_checkpoint, read_model_dir
from f1kit.recipe.stages.weights import load_tokenizer_weights
from foresight import MultiScaleVQVAE, VQVAEConfig
from foresight.var_weights import ours_to_var


@pytest.fixture()
def var_file(tmp_path: Path) -> tuple[Path, MultiScaleVQVAE]:
    torch.manual_seed(0)
    vae = MultiScaleVQVAE(VQVAEConfig.small_64())
    path = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in ours_to_var(vae).items()}, str(path))
    return path, vae


def test_var_becomes_the_tokenizer_part_and_loads_through_tokenizer_path(
    var_file: tuple[Path, MultiScaleVQVAE], tmp_path: Path
) -> None:
    path, vae = var_file
    found = convert_checkpoint("var", path, tmp_path / "var-f1kit", scales=[1, 2, 3, 4])
    assert found.parts == ("tokenizer",)
    assert found.config.generation.tokenizer.vqvae_config() == VQVAEConfig.small_64()
    config = F1Config.tiny(overrides={"generation": {"tokenizer": {"path": str(found.path)}}})
    model = F1(config)
    load_tokenizer_weights(model)
    for key, value in vae.state_dict().items():
        assert torch.equal(model.tokenizer.state_dict()[key], value), key


def test_a_tokenizer_of_another_schedule_is_refused(
    var_file: tuple[Path, MultiScaleVQVAE], tmp_path: Path
) -> None:
    path, _ = var_file
    found = convert_checkpoint("var", path, tmp_path / "var-f1kit", scales=[1, 2, 3, 5])
    config = F1Config.tiny(overrides={"generation": {"tokenizer": {"path": str(found.path)}}})
    with pytest.raises(ValueError, match=r"generation\.tokenizer"):
        load_tokenizer_weights(F1(config))


def test_the_cli_converts_and_names_bad_sources(
    var_file: tuple[Path, MultiScaleVQVAE], tmp_path: Path
) -> None:
    path, _ = var_file
    runner = CliRunner()
    dst = tmp_path / "out"
    result = runner.invoke(
        app, ["convert", "--from", "var", str(path), str(dst), "-o", "scales=[1, 2, 3, 4]"]
    )
    assert result.exit_code == 0, result.output
    assert "parts ['tokenizer']" in result.output
    assert "converting var" in result.output  # the progress bar over the tensors
    assert read_model_dir(dst).parts == ("tokenizer",)
    result = runner.invoke(app, ["convert", "--from", "nope", str(path), str(dst)])
    assert result.exit_code == 2 and "unknown source 'nope'" in result.output
    result = runner.invoke(app, ["convert", "--from", "var", str(path), str(dst)])
    assert result.exit_code == 1 and "--overwrite" in result.output
    result = runner.invoke(
        app, ["convert", "--from", "paligemma", str(path), str(dst), "--overwrite"]
    )
    assert result.exit_code == 1 and "config.json" in result.output
