"""Every recipe shipped in recipes/ validates (the `_base/` fragments through the recipes that
include them: they are not complete recipes on their own)."""
from pathlib import Path

import pytest

from wsolctl.recipe import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SHIPPED = sorted(p for p in RECIPES.rglob("*.yaml") if "_base" not in p.relative_to(RECIPES).parts)


def test_every_fragment_is_used():
    fragments = {f"_base/{p.name}" for p in RECIPES.rglob("_base/*.yaml")}
    texts = "\n".join(p.read_text() for p in SHIPPED)
    assert SHIPPED and all(name in texts for name in fragments), fragments


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(RECIPES)))
def test_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.methods and recipe.backbones
