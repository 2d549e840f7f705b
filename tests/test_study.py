"""The study object: planned once from the validated recipe, each configuration validated once per
process (counted on pydantic's own validator of ``Recipe``), and ``study.json`` as typed data."""
import polars as pl
import pytest

from wsolctl import pipeline
from wsolctl.engine.study import Choice, Outcome, Record, Study
from wsolctl.recipe import Recipe, load_recipe
from wsolctl.recipe.sweep import final_variants


class CountingValidator:
    """Stands in for ``Recipe``'s compiled pydantic validator; counts every validation through it
    (``Recipe(...)``, ``Recipe.model_validate(...)``, JSON alike)."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def validate_python(self, *args, **kwargs):
        self.calls += 1
        return self.real.validate_python(*args, **kwargs)

    def validate_json(self, *args, **kwargs):
        self.calls += 1
        return self.real.validate_json(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture
def validations(monkeypatch):
    counter = CountingValidator(Recipe.__pydantic_validator__)
    monkeypatch.setattr(Recipe, "__pydantic_validator__", counter)
    return counter


def with_folds(tiny_recipe, folds="[0, 1]"):
    tiny_recipe.write_text(tiny_recipe.read_text() + f"sweep: {{folds: {folds}}}\n")
    return tiny_recipe


def test_the_counter_sees_every_validation(tiny_recipe, validations):
    recipe = load_recipe(tiny_recipe)
    assert validations.calls == 1
    Recipe.model_validate(recipe.resolved_dict())
    Recipe(**dict(recipe))
    assert validations.calls == 3


def test_planning_a_study_validates_nothing_again(tiny_recipe, tmp_path, validations):
    recipe = load_recipe(with_folds(tiny_recipe))
    study = Study.plan(recipe)
    variants = [run.variant for run in study.search.runs]
    final = final_variants(recipe, variants)
    assert validations.calls == 1  # the load only
    assert [v.recipe.dataset.fold for v in final] == [0, 1]
    # copies equal the validated recipe they stand for (same data, same run ids)
    for variant in final:
        data = variant.recipe.resolved_dict()
        assert Recipe.model_validate(data).resolved_dict() == data


def test_a_prerequisite_is_planned_without_validating_again(tiny_recipe, validations):
    text = tiny_recipe.read_text().replace("  - name: gradcam\n", "  - name: negev\n")
    tiny_recipe.write_text(text.replace("  - name: cam\n", ""))
    study = Study.plan(load_recipe(tiny_recipe))
    (prerequisite,) = study.search.prerequisites
    assert prerequisite.labels == ("cam",)
    assert validations.calls == 1


def test_study_json_is_typed_data(tmp_path):
    outcomes = (Outcome("r1", "search", "c1", "resnet18-wsol", "done", None, 1.5),
                Outcome("r2", "search", "c2", "resnet18-wsol", "failed", "boom", None))
    chosen = {Choice("resnet18-wsol", "cam", "b-loc"): "c1", Choice("resnet18-wsol", "cam", "b-cl"): "c2"}
    Record(outcomes, chosen).save(tmp_path)
    record = Record.load(tmp_path)
    assert record == Record(outcomes, chosen)
    assert record.finals() == [outcomes[0]]  # the failed run is not scored
    assert record.chose(outcomes[0], "cam", "b-loc") and not record.chose(outcomes[0], "cam", "b-cl")


@pytest.mark.slow
def test_a_study_validates_the_recipe_once_plus_once_per_run_in_its_worker(tiny_recipe, tmp_path, validations):
    """Per training run at most two validations: the load, and the worker's ``RunDir.spec`` (the
    sequential executor's worker is this process); selecting and reporting add none."""
    out = pipeline.run(with_folds(tiny_recipe), tmp_path / "out", quiet=True).parent
    runs = pl.read_parquet(out / "runs.parquet")["run_id"].unique()
    assert len(runs) == 2  # fold 0 (search and final) and fold 1
    assert validations.calls == 1 + len(runs)
    assert len(pl.read_parquet(out / "results.parquet")) == 2 * 2 * 2  # folds × methods × rules


def test_a_study_json_of_an_earlier_version_is_a_clear_error(tmp_path):
    from wsolctl.errors import InputError

    (tmp_path / "study.json").write_text('{"runs": [], "chosen": {"resnet18-wsol|cam|b-loc": "c1"}}')
    with pytest.raises(InputError, match="earlier wsolctl version"):
        Record.load(tmp_path)
