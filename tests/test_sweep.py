"""Sweeps: expansion, run identity, hyper-parameter selection, executors, failure isolation."""
import json
import subprocess
import sys

import polars as pl
import pytest

from wsolctl import pipeline
from wsolctl.engine.plan import study_runs
from wsolctl.engine.study import Choice, Record
from wsolctl.errors import RunsFailed
from wsolctl.recipe import RecipeError, load_recipe
from wsolctl.recipe.sweep import search_variants

SWEEP = """
sweep:
  grid: {{train.lr: {lrs}}}
  folds: [0, 1]
  seeds: [0]
"""


@pytest.fixture
def sweep_recipe(tiny_recipe):
    def make(lrs="[0.01, 0.001]", extra=""):
        path = tiny_recipe.parent / "sweep.yaml"
        path.write_text(tiny_recipe.read_text() + SWEEP.format(lrs=lrs) + extra)
        return path
    return make


def test_expansion_and_stable_run_ids(sweep_recipe):
    recipe = load_recipe(sweep_recipe())
    search = study_runs(search_variants(recipe))
    assert len(search) == 2  # 2 learning rates × 1 backbone × 1 method group (cam + gradcam share)
    assert [r.variant.swept for r in search] == [{"train.lr": 0.01}, {"train.lr": 0.001}]
    assert all(r.recipe.dataset.fold == 0 for r in search)
    again = study_runs(search_variants(load_recipe(sweep_recipe())))
    assert [r.run_id for r in search] == [r.run_id for r in again]
    changed = study_runs(search_variants(load_recipe(sweep_recipe("[0.01, 0.003]"))))
    assert changed[0].run_id == search[0].run_id and changed[1].run_id != search[1].run_id


def test_method_search_spaces_and_random_search(sweep_recipe):
    extra = "  params: {gradcam: {layer: [layer3, layer4]}}\n  random: {trials: 3, seed: 1}\n"
    recipe = load_recipe(sweep_recipe(extra=extra))
    variants = search_variants(recipe)
    assert len(variants) == 3  # 3 of the 2 × 2 grid
    assert all(set(v.swept) == {"train.lr", "gradcam.layer"} for v in variants)
    assert variants == search_variants(recipe)  # the draw is seeded


def test_bad_sweep_values_point_at_the_sweep(sweep_recipe):
    path = sweep_recipe("[0.01, -1]")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    (problem,) = info.value.problems
    assert str(problem).startswith(f"{path}:22:27: ")  # the line and column of the bad value
    assert "sweep.grid.train.lr[1]" in str(problem) and "train.lr: Input should be greater than 0" in str(problem)
    bad_key = sweep_recipe().parent / "m.yaml"
    bad_key.write_text(sweep_recipe().read_text().replace("{train.lr:", "{methods.0.name:"))
    with pytest.raises(RecipeError, match="cannot be swept here"):
        load_recipe(bad_key)


@pytest.mark.slow
@pytest.mark.parametrize("key,owner", [("seed", "seeds"), ("dataset.fold", "folds")])
def test_grid_over_a_key_that_seeds_or_folds_set_is_refused_in_one_line(sweep_recipe, key, owner):
    # it used to plan the same run id twice, and `run` then died: "no finished run to select from"
    path = sweep_recipe(extra="").parent / "g.yaml"
    path.write_text(sweep_recipe().read_text().replace("{train.lr: [0.01, 0.001]}",
                                                       f"{{train.lr: [0.01, 0.001], {key}: [0, 1]}}"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    (problem,) = info.value.problems
    assert str(problem) == (f"{path}:22:3: sweep.grid: '{key}' cannot be a grid key: sweep.{owner} sets it for "
                            f"every run (use sweep.{owner}: [...])")
    result = subprocess.run([sys.executable, "-m", "wsolctl", "validate", str(path)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == str(problem)


@pytest.mark.slow
def test_show_runs_lists_without_running(sweep_recipe, tmp_path):
    result = subprocess.run([sys.executable, "-m", "wsolctl", "show", "--runs", str(sweep_recipe())],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 search run(s)" in result.stdout and "folds [0, 1]" in result.stdout
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def sequential_sweep(tmp_path_factory):
    from tests.conftest import TINY

    tmp = tmp_path_factory.mktemp("sweep")
    path = tmp / "sweep.yaml"
    path.write_text(TINY.format(root=tmp / "data") + SWEEP.format(lrs="[0.01, 0.001]"))
    # One thread per run everywhere: float sums (hence numbers) depend on the thread count.
    out = pipeline.run(path, tmp / "sequential", ["executor.threads=1"], quiet=True).parent
    return path, out


@pytest.mark.slow
def test_sweep_selects_on_validation_then_runs_all_folds(sequential_sweep):
    _, out = sequential_sweep
    runs = pl.read_parquet(out / "runs.parquet")
    assert {"run_id", "train.lr", "fold", "seed", "method", "backbone", "status", "error", "duration_s",
            "valpx_pxap", "valcl_acc", "chosen"} <= set(runs.columns)
    assert (runs["status"] == "done").all()
    search = runs.filter(pl.col("fold") == 0)
    for method in ("cam", "gradcam"):
        rows = search.filter(pl.col("method") == method)
        best = rows.sort(["valpx_pxap"], descending=True, maintain_order=True)
        assert rows.filter(pl.col("chosen_b_loc"))["valpx_pxap"].item() == best["valpx_pxap"].max()
    results = pl.read_parquet(out / "results.parquet")
    assert sorted(results["fold"].unique()) == [0, 1]
    assert len(results) == 2 * 2 * 2  # folds × methods × rules, each from its chosen configuration
    chosen = Record.load(out).chosen
    for row in results.iter_rows(named=True):
        lr = json.loads((out / "runs" / row["run_id"] / "spec.json").read_text())["recipe"]["train"]["lr"]
        config_lr = runs.filter((pl.col("config_id") == chosen[Choice(row["backbone"], row["method"], row["selection"])]))["train.lr"][0]
        assert lr == config_lr


@pytest.mark.slow
@pytest.mark.parametrize("executor", [["executor.workers=2"], ["executor.name=ray"]], ids=["local-pool", "ray"])
def test_other_executors_give_identical_results(sequential_sweep, tmp_path, executor):
    if "ray" in executor[0]:
        import ray  # noqa: F401  (a declared extra in CI: a broken install must fail here, not skip)
    path, out = sequential_sweep
    other = pipeline.run(path, tmp_path / "other", executor + ["executor.threads=1"], quiet=True).parent
    a = pl.read_parquet(out / "results.parquet").drop("params").sort(["run_id", "method", "selection"])
    b = pl.read_parquet(other / "results.parquet").drop("params").sort(["run_id", "method", "selection"])
    assert a.equals(b)


@pytest.mark.slow
def test_rerun_skips_everything_and_a_new_value_runs_only_new_runs(sequential_sweep, tmp_path):
    import shutil

    path, out = sequential_sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    stamps = {p: p.stat().st_mtime_ns for p in copy.glob("runs/*/state.pt")}
    path.with_name("more.yaml").write_text(path.read_text().replace("[0.01, 0.001]", "[0.01, 0.001, 0.003]"))
    pipeline.train(path.with_name("more.yaml"), copy, quiet=True)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing old retrained
    assert len(list(copy.glob("runs/*/done.json"))) >= len(stamps) + 1


@pytest.mark.slow
def test_failing_run_is_isolated(tmp_path, tiny_recipe):
    path = tmp_path / "fail.yaml"
    path.write_text(tiny_recipe.read_text() + SWEEP.format(lrs="[0.01, 1.0e+30]").replace("folds: [0, 1]", "folds: [0]"))
    with pytest.raises(RunsFailed, match="1 run\\(s\\) failed") as info:
        pipeline.run(path, tmp_path / "out", quiet=True)
    assert "train.log" in str(info.value)
    runs = pl.read_parquet(tmp_path / "out" / "runs.parquet")
    assert sorted(runs["status"].unique()) == ["done", "failed"]
    assert runs.filter(pl.col("status") == "failed")["error"][0].startswith("NonFiniteLoss")
    assert (tmp_path / "out" / "results.parquet").is_file()  # the others were still selected and reported
    cli = subprocess.run([sys.executable, "-m", "wsolctl", "train", str(path), "--out", str(tmp_path / "out"), "-q"],
                         capture_output=True, text=True)
    assert cli.returncode == 1 and "failed" in cli.stderr and "Traceback" not in cli.stderr


def documented_space(method: str) -> dict[str, list]:
    """A method's Table 7 search space as docs/methods.md states it (its overview table)."""
    import ast
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / "docs" / "methods.md").read_text()
    row = next(line for line in docs.splitlines() if line.startswith(f"| `{method}` |"))
    cell = row.split(" | ")[4]
    return {name: ast.literal_eval(values) for name, values in re.findall(r"`(\w+)` ∈ (\[[^\]]*\])", cell)}


def test_search_table7_expands_as_documented(tiny_recipe):
    """`sweep.search: table7` adds each method's own documented space to the grid: one configuration
    per combination, per method group; methods without a space (cam, gradcam) get the grid only."""
    text = tiny_recipe.read_text().replace("  - name: gradcam\n", "  - name: gradcam\n  - name: lse\n  - name: has\n")
    path = tiny_recipe.parent / "table7.yaml"
    path.write_text(text + "sweep:\n  grid: {train.lr: [0.01, 0.001]}\n  search: table7\n")
    lse, has = documented_space("lse"), documented_space("has")
    assert lse == {"r": list(range(1, 11))} and set(has) == {"grid_size", "drop_rate"}  # what README/docs promise
    variants = search_variants(load_recipe(path))
    by_group: dict[tuple, list] = {}
    for v in variants:
        by_group.setdefault(tuple(m.name for m in v.recipe.methods), []).append(v)
    assert sorted(by_group) == [("cam", "gradcam"), ("has",), ("lse",)]
    assert len(by_group[("cam", "gradcam")]) == 2
    assert len(by_group[("lse",)]) == 2 * 10
    assert len(by_group[("has",)]) == 2 * len(has["grid_size"]) * len(has["drop_rate"])
    assert len(variants) == 2 + 20 + 50
    assert {frozenset(v.swept) for v in by_group[("has",)]} == {frozenset({"train.lr", "has.grid_size", "has.drop_rate"})}
    assert sorted({v.swept["lse.r"] for v in by_group[("lse",)]}) == lse["r"]
    for v in by_group[("has",)]:  # the swept values are the ones the concrete recipe trains with
        params = v.recipe.methods[0].params
        assert (params.grid_size, params.drop_rate, v.recipe.train.lr) == (
            v.swept["has.grid_size"], v.swept["has.drop_rate"], v.swept["train.lr"])
    # without `search: table7` only the grid is swept
    path.write_text(text + "sweep:\n  grid: {train.lr: [0.01, 0.001]}\n")
    assert len(search_variants(load_recipe(path))) == 3 * 2
