"""What a new user gets wrong, answered in one line with exit code 2 before anything is written (issue 28)."""
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsolctl.cli import app
from wsolctl.errors import RecipeError
from wsolctl.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def _fails_in_one_line(args: list[str], *needles: str) -> str:
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2, done.output
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.output, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr
    return done.stderr


def test_set_takes_list_items_in_brackets(tiny_recipe):
    recipe = load_recipe(tiny_recipe, ["methods[1].name=gradcampp", "methods[0].params={}"])
    assert recipe.methods[1].name == "gradcampp"
    assert load_recipe(tiny_recipe, ["methods.1.name=gradcampp"]) == recipe
    _fails_in_one_line(["validate", str(tiny_recipe), "--set", "methods[x].name=cam"],
                       "write methods.0.name or methods[0].name")


def test_names_are_suggested_whatever_their_case(tiny_recipe):
    _fails_in_one_line(["validate", str(tiny_recipe), "--set", "backbones[0].name=UNI"], "did you mean 'uni'")
    _fails_in_one_line(["validate", str(tiny_recipe), "--set", "methods[0].name=GradCAM"], "did you mean 'gradcam'")


def test_a_top_down_layer_is_checked_against_the_backbones_modules(tiny_recipe):
    _fails_in_one_line(["validate", str(tiny_recipe), "--set", "methods[1].params.layer=layer5"],
                       "methods[1].params: gradcam: layer 'layer5' is not a module of backbone 'resnet18-wsol'",
                       "did you mean 'layer4'")
    assert load_recipe(tiny_recipe, ["methods[1].params.layer=layer3.1"]).methods[1].params.layer == "layer3.1"
    token = ["backbones=[{name: deit-tiny}]"]
    assert load_recipe(tiny_recipe, token + ["methods[1].params.layer=blocks.10.norm1"])
    with pytest.raises(RecipeError, match=r"layer 'blocks.12.norm1' is not a module of backbone 'deit-tiny'"):
        load_recipe(tiny_recipe, token + ["methods[1].params.layer=blocks.12.norm1"])


def test_a_missing_data_root_is_found_by_validate_and_run_writes_nothing(tmp_path):
    recipe = tmp_path / "folds.yaml"
    recipe.write_text(f"name: f\ndataset: {{name: folds, root: {tmp_path / 'nowhere'}}}\n"
                      "backbones: [{name: resnet18-wsol}]\nmethods: [{name: cam}]\n")
    line = f"{recipe}:2:24: dataset.root: {tmp_path / 'nowhere'}: no fold files here"
    _fails_in_one_line(["validate", str(recipe)], line)
    out = tmp_path / "out"
    _fails_in_one_line(["run", str(recipe), "--out", str(out), "--quiet"], line)
    assert not out.exists()
    assert load_recipe(recipe).dataset.root  # without the data check (e.g. a spec read back by predict): valid


def test_predict_on_a_study_without_results_says_what_runs_first(tmp_path):
    _fails_in_one_line(["predict", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "p")],
                       "wsolctl select")


def test_version_and_runs_as_json(tiny_recipe):
    import json
    from importlib.metadata import version

    done = CliRunner().invoke(app, ["--version"])
    assert done.exit_code == 0 and done.stdout.strip() == f"wsolctl {version('wsolctl')}"
    done = CliRunner().invoke(app, ["show", str(tiny_recipe), "--runs", "--json"])
    assert done.exit_code == 0, done.output
    runs = json.loads(done.stdout)
    assert runs["final_runs_max"] == 1 and [r["methods"] for r in runs["search"]] == [["cam", "gradcam"]]
    from wsolctl.engine.study import Study

    assert [r["run_id"] for r in runs["search"]] == [r.run_id for r in Study.plan(load_recipe(tiny_recipe)).search.runs]


def test_backbones_never_cuts_a_name(monkeypatch, capsys):
    from wsolctl.catalog import print_backbones

    monkeypatch.setenv("COLUMNS", "80")
    name = "a-very-long-backbone-plugin-name"
    weights = "hf-hub:some-organisation/a_very_long_model_name_patch16_224.some_tag"
    print_backbones([{"name": name, "weights": weights, "gated": True, "cached": "no",
                      "normalize": None, "tokens": "class token", "note": "a long licence note " * 3, "licence": None}])
    printed = capsys.readouterr().out
    assert name in printed and "…" not in printed
    assert "".join(line.split("│")[2].strip() for line in printed.splitlines() if line.count("│") > 2) == weights


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--version"], ["show", "recipes/quickstart.yaml", "--runs", "--json"],
                                  ["validate", "recipes/quickstart.yaml"]])
def test_light_commands_import_no_torch(args):
    import subprocess
    import sys

    code = ("import sys; from wsolctl.cli import app; sys.argv = ['wsolctl'] + sys.argv[1:]\n"
            "try: app()\nexcept SystemExit as exit: assert exit.code in (0, None), exit.code\n"
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
