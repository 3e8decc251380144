"""The data of a recipe run (f1kit.recipe.data)."""

import copy

import pytest

from f1kit.data import make_processors
from f1kit.recipe import RecipeError, recipe_from_dict
from f1kit.recipe.data import check_eval_embodiments
from tests.f1kit.recipe.helpers import toy
from tests.f1kit.test_processor import two_datasets


def _eval_embodiment(name: str) -> dict:
    data = toy()
    data["stages"][2] = {**copy.deepcopy(data["stages"][2]), "embodiment": name}
    return data


def test_evaluate_stages_name_an_embodiment_when_the_data_has_several(tmp_path):
    """The simulator's observations carry no embodiment: with several datasets an evaluate stage
    must name whose statistics it uses, checked before any stage runs (it used dataset 0's)."""
    pre, _ = make_processors(two_datasets(tmp_path))
    recipe = recipe_from_dict(toy())
    with pytest.raises(RecipeError, match=r"stages\.2\.embodiment: the data has 2 embodiments"):
        check_eval_embodiments(recipe, pre)
    named = recipe_from_dict(_eval_embodiment("arm"))
    check_eval_embodiments(named, pre)
    wrong = recipe_from_dict(_eval_embodiment("leg"))
    with pytest.raises(RecipeError, match="'leg' is not among the data's embodiments"):
        check_eval_embodiments(wrong, pre)
    single, _ = make_processors(two_datasets(tmp_path / "one")[:1])
    check_eval_embodiments(recipe, single)  # one embodiment: nothing to name
