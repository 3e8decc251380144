"""The usage examples in mot's docstrings run and print what they claim."""

import doctest

import pytest

import mot.cache
import mot.config
import mot.layer
import mot.stack
import mot.steps


@pytest.mark.parametrize("module", [mot.cache, mot.config, mot.layer, mot.stack, mot.steps])
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
