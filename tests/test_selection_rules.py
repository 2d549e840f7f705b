"""Selection rules and checks are declarations (``wsolctl.selection``): a rule added to the table is
validated in recipes, selected, tabled and drawn with no other change."""
import numpy as np
import polars as pl
import pytest

from wsolctl import selection
from wsolctl.errors import RecipeError
from wsolctl.recipe import load_recipe
from wsolctl.selection import RULES, Rule

MAGENTA = "#ff00ff"  # no other element of the figures is drawn in it


@pytest.fixture
def new_rule(monkeypatch):
    """One more rule, declared like the built-in ones: the epoch of best validation accuracy."""
    rule = Rule("b-fixture", "B-FIXTURE", "valcl", None, MAGENTA)
    monkeypatch.setitem(RULES, rule.name, rule)
    return rule


def _with_selection(tiny_recipe, rules: str):
    tiny_recipe.write_text(tiny_recipe.read_text() + f"selection: [{rules}]\n")
    return tiny_recipe


def test_the_rules_declare_what_they_read():
    assert [(r.name, r.metric, r.threshold_rule("otsu")) for r in RULES.values()] == [
        ("b-loc", "valpx_pxap", "test-masks"), ("b-cl", "valcl_acc", "test-masks"),
        ("b-pseudo", "valpx_pseudo_pxap", "otsu")]
    assert RULES["b-loc"].problem(masks=False, annotator=True).startswith("b-loc needs the validation masks")
    assert RULES["b-pseudo"].problem(masks=True, annotator=False).startswith("b-pseudo needs a pseudo-annotator")
    assert RULES["b-cl"].problem(masks=False, annotator=False) is None
    assert set(selection.CHECKS) == {"model-randomisation"}
    assert callable(selection.CHECKS["model-randomisation"].run())


def test_an_unknown_rule_or_check_is_a_recipe_error(tiny_recipe):
    with pytest.raises(RecipeError, match="unknown selection rule 'b-fixture'"):
        load_recipe(_with_selection(tiny_recipe, "b-loc, b-fixture"))
    tiny_recipe.write_text(tiny_recipe.read_text().replace("  thresholds: 100\n", "  thresholds: 100\n  checks: [x]\n"))
    with pytest.raises(RecipeError, match="unknown check 'x'"):
        load_recipe(tiny_recipe)


@pytest.mark.slow
def test_a_new_rule_is_validated_selected_tabled_and_drawn(new_rule, tiny_recipe, tmp_path):
    from PIL import Image

    from wsolctl import pipeline

    recipe = load_recipe(_with_selection(tiny_recipe, "b-loc, b-fixture"))  # validated
    assert recipe.selection == ["b-loc", "b-fixture"]
    out = pipeline.run(recipe, tmp_path / "out", quiet=True).parent
    results = pl.read_parquet(out / "results.parquet")
    mine = results.filter(pl.col("selection") == "b-fixture")  # selected: one model per method
    assert sorted(mine["method"]) == ["cam", "gradcam"] and set(mine["threshold_rule"]) == {"test-masks"}
    assert "chosen_b_fixture" in pl.read_parquet(out / "runs.parquet").columns
    report = (out / "report.md").read_text()
    assert "### Test results, B-FIXTURE selection" in report  # tabled
    for figure in ("model-selection.png", "training-curves.png"):  # drawn, in its colour
        pixels = np.asarray(Image.open(out / "figures" / figure).convert("RGB")).reshape(-1, 3).astype(int)
        assert (np.abs(pixels - [255, 0, 255]).sum(axis=1) < 60).sum() > 20, figure
