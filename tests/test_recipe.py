"""Recipe loading: inheritance, overrides, and the file:line:col error contract."""
import subprocess
import sys
import textwrap

import pytest

from wsolctl.recipe import RecipeError, load_recipe

BASE = """\
name: base
dataset:
  name: synthetic-glas
  root: data/x
backbones:
  - name: resnet18-wsol
methods:
  - name: cam
train:
  epochs: 2
  optimizer:
    momentum: 0.5
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path, overrides=()):
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return [str(p) for p in info.value.problems]


def test_defaults_follow_the_survey(tmp_path):
    recipe = load_recipe(write(tmp_path, "r.yaml", BASE))
    assert recipe.train.optimizer.name == "sgd" and recipe.train.optimizer.nesterov
    assert recipe.train.optimizer.weight_decay == 1e-4
    assert recipe.evaluation.thresholds == 1000 and recipe.image_size == 224
    assert recipe.selection == ["b-loc", "b-cl"]
    assert recipe.dataset.params.valpx_per_class == 3  # survey: 3 per class on GlaS


def test_base_deep_merge_and_list_replace(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """\
        _base_: base.yaml
        name: child
        train: {lr: 0.1}
        methods: [{name: gradcam}]
        """)
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert recipe.train.lr == 0.1 and recipe.train.epochs == 2  # merged, not replaced
    assert recipe.train.optimizer.momentum == 0.5
    assert [m.name for m in recipe.methods] == ["gradcam"]  # lists replace


def test_base_list_and_nested_dirs(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sub/a.yaml", BASE)
    write(tmp_path, "sub/b.yaml", "train: {epochs: 7}\n")
    child = write(tmp_path, "c.yaml", "_base_: [sub/a.yaml, sub/b.yaml]\nseed: 3\n")
    recipe = load_recipe(child)
    assert (recipe.train.epochs, recipe.seed, recipe.train.optimizer.momentum) == (7, 3, 0.5)


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", "_base_: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "_base_: a.yaml\n")
    (line,) = problems(tmp_path / "a.yaml")
    assert line.startswith(f"{tmp_path / 'a.yaml'}:1:1: _base_: inheritance cycle")


def test_errors_point_into_base_files(tmp_path):
    write(tmp_path, "base.yaml", BASE.replace("epochs: 2", "epochs: -2"))
    child = write(tmp_path, "child.yaml", "_base_: base.yaml\n")
    (line,) = problems(child)
    assert line == f"{tmp_path / 'base.yaml'}:10:3: train.epochs: Input should be greater than or equal to 0"


def test_every_problem_one_line_with_position(tmp_path):
    path = write(tmp_path, "bad.yaml", """\
        name: bad
        seed: -1
        dataset:
          name: synthetic-glass
          root: data/x
        backbones:
          - {name: resnet18-wsol}
        methods:
          - name: gradcam
            params: {layr: layer4}
          - name: gradcamm
        train:
          epoks: 3
          batch_size: abc
        """)
    p = str(path)
    assert problems(path) == [
        f"{p}:2:1: seed: Input should be greater than or equal to 0",
        f"{p}:4:3: dataset.name: unknown dataset 'synthetic-glass'; did you mean 'synthetic-glas', 'synthetic-camelyon'?",
        f"{p}:10:14: methods[0].params.layr: unknown field (did you mean 'layer'?)",
        f"{p}:11:5: methods[1].name: unknown method 'gradcamm'; did you mean 'gradcam', 'xgradcam', 'gradcampp'?",
        f"{p}:13:3: train.epoks: unknown field (did you mean 'epochs'?)",
        f"{p}:14:3: train.batch_size: Input should be a valid integer, unable to parse string as an integer",
    ]


def test_missing_field_and_yaml_syntax(tmp_path):
    (line,) = problems(write(tmp_path, "m.yaml", BASE.replace("name: base\n", "")))
    assert line.endswith(":1:1: name: field required")
    (line,) = problems(write(tmp_path, "s.yaml", "name: x\n  bad: [\n"))
    assert line.startswith(f"{tmp_path / 's.yaml'}:2:6: YAML syntax")
    (line,) = problems(tmp_path / "absent.yaml")
    assert line == f"{tmp_path / 'absent.yaml'}:1:1: file not found"


def test_set_overrides(tmp_path):
    path = write(tmp_path, "r.yaml", BASE)
    recipe = load_recipe(path, ["train.epochs=5", "train.optimizer={name: adam}", "backbones.0.pretrained=false",
                                "evaluation.cam_target=predicted"])
    assert recipe.train.epochs == 5 and recipe.train.optimizer.name == "adam"
    assert recipe.evaluation.cam_target == "predicted"
    assert problems(path, ["train.epochs=abc"]) == [
        "--set train.epochs=abc: train.epochs: Input should be a valid integer, unable to parse string as an integer"]
    assert problems(path, ["methods.3.name=cam"]) == ["--set methods.3.name=cam: methods[3]: no such list item"]
    assert problems(path, ["train.epochs"])[0].startswith("--set train.epochs: expected KEY=VALUE")
    assert problems(path, ["train.nope=1"]) == ["--set train.nope=1: train.nope: unknown field"]


def test_duplicate_key_is_an_error(tmp_path):
    (line,) = problems(write(tmp_path, "d.yaml", BASE + "seed: 1\nseed: 2\n"))
    assert line.endswith(":14:1: seed: duplicate key")


def test_pretrained_true_validates_without_weights_or_network(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    recipe = load_recipe(write(tmp_path, "p.yaml", BASE.replace("- name: resnet18-wsol", "- {name: resnet18-wsol, pretrained: true}")))
    assert recipe.backbones[0].pretrained is True
    assert not (tmp_path / "empty-cache").exists()  # validation never downloads


def test_freeze_beyond_the_declared_stages_is_a_validation_error(tmp_path):
    (line,) = problems(write(tmp_path, "f.yaml", BASE.replace("- name: resnet18-wsol", "- {name: resnet18-wsol, freeze: 6}")))
    assert line.endswith(":6:27: backbones[0].freeze: backbone 'resnet18-wsol' declares 5 stages")


def test_missing_weights_file_is_a_validation_error(tmp_path):
    text = BASE.replace("- name: resnet18-wsol", "- {name: resnet18-wsol, pretrained: nowhere.pth}")
    (line,) = problems(write(tmp_path, "w.yaml", text))
    assert line.endswith(":6:27: backbones[0].pretrained: weights file not found: nowhere.pth")


def test_unsupported_backbone_is_a_validation_error(tmp_path, monkeypatch):
    from wsolctl import plugins

    cam = plugins.load("methods", "cam")
    monkeypatch.setattr(cam, "unsupported", classmethod(lambda cls, b: "needs a ViT" if b.kind == "cnn" else None))
    (line,) = problems(write(tmp_path, "r.yaml", BASE))
    assert line.endswith(":8:5: methods[0].name: cam does not support backbone 'resnet18-wsol': needs a ViT")


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "wsolctl", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_cli_exit_codes_no_traceback_nothing_written(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    bad = write(tmp_path, "bad.yaml", "_base_: base.yaml\ntrain: {epochs: x}\n")
    for command in (["validate", "bad.yaml"], ["show", "bad.yaml"], ["run", "bad.yaml", "--out", "out"],
                    ["train", "bad.yaml", "--out", "out"]):
        result = run_cli(*command, cwd=tmp_path)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        assert result.stderr.strip() == "bad.yaml:2:9: train.epochs: Input should be a valid integer, unable to parse string as an integer"
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
    assert run_cli("validate", "base.yaml", cwd=tmp_path).returncode == 0
    assert bad.exists()


@pytest.mark.slow
def test_cli_show_prints_resolved_recipe(tmp_path):
    import yaml

    write(tmp_path, "base.yaml", BASE)
    result = run_cli("show", "base.yaml", "--set", "train.epochs=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["train"]["epochs"] == 3
    assert shown["dataset"]["params"]["valcl_fraction"] == 0.2  # plugin defaults filled in
    assert load_recipe(write(tmp_path, "again.yaml", result.stdout)).train.epochs == 3


@pytest.mark.slow
def test_cli_validate_does_not_import_torch(tmp_path):
    write(tmp_path, "base.yaml", BASE + "sweep: {grid: {train.lr: [0.1, 0.01]}, params: {cam: {}}}\n")
    code = ("import sys; from wsolctl.cli import app; "
            "sys.argv=['wsolctl','validate','base.yaml'];\n"
            "try: app()\nexcept SystemExit as exit: assert exit.code in (0, None), exit.code\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert not [m for m in sys.modules if m.startswith('wsolctl.engine')], 'engine imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_methods_can_be_restricted_to_some_backbones(tmp_path, monkeypatch):
    from wsolctl import plugins
    from wsolctl.engine.plan import study_runs
    from wsolctl.recipe.sweep import search_variants

    text = BASE.replace("  - name: resnet18-wsol\n", "  - name: resnet18-wsol\n  - name: resnet50-wsol\n")
    text = text.replace("  - name: cam\n", "  - name: cam\n  - {name: gradcam, backbones: [resnet50-wsol]}\n")
    runs = study_runs(search_variants(load_recipe(write(tmp_path, "r.yaml", text))))
    assert sorted((r.backbone_index, r.labels) for r in runs) == [
        (0, ("cam",)), (1, ("cam", "gradcam"))]
    gradcam = plugins.load("methods", "gradcam")
    monkeypatch.setattr(gradcam, "unsupported", classmethod(lambda cls, b: "no" if b.out_channels == 512 else None))
    load_recipe(tmp_path / "r.yaml")  # the refused combination is not requested: valid
    bad = write(tmp_path, "b.yaml", text.replace("backbones: [resnet50-wsol]", "backbones: [vgg16-wsol]"))
    assert "names backbones not in the recipe: ['vgg16-wsol']" in problems(bad)[0]


def test_per_method_train_overrides_are_validated_merged_and_own_a_run(tmp_path):
    from wsolctl.engine.build import build_model, build_optimizer
    from wsolctl.engine.plan import study_runs
    from wsolctl.recipe.sweep import search_variants

    def runs(text):
        return study_runs(search_variants(load_recipe(write(tmp_path, "o.yaml", text))))

    shared = runs(BASE.replace("  - name: cam\n", "  - name: cam\n  - name: gradcam\n"))
    assert [r.labels for r in shared] == [("cam", "gradcam")]
    text = BASE.replace("  - name: cam\n", "  - {name: cam, train: {optimizer: {lr_classifier_ratio: 1}}}\n  - name: gradcam\n")
    recipe = load_recipe(write(tmp_path, "o.yaml", text))
    cam, gradcam = recipe.methods
    assert recipe.train_of(cam).optimizer.lr_classifier_ratio == 1
    assert recipe.train_of(cam).optimizer.momentum == 0.5 and recipe.train_of(cam).epochs == 2  # merged over train
    assert recipe.train_of(gradcam) == recipe.train
    split = runs(text)
    assert sorted(r.labels for r in split) == [("cam",), ("gradcam",)]  # different training: not shared
    by_label = {r.labels: r for r in split}
    assert by_label[("gradcam",)].run_id != shared[0].run_id and by_label[("cam",)].run_id != shared[0].run_id
    assert by_label[("cam",)].identity()["train"]["optimizer"]["lr_classifier_ratio"] == 1
    noop = runs(BASE.replace("  - name: cam\n", "  - {name: cam, train: {optimizer: {lr_classifier_ratio: 10}}}\n"
                                                "  - name: gradcam\n"))
    assert [r.run_id for r in noop] == [shared[0].run_id]  # the same effective settings: the same run
    spec = by_label[("cam",)]
    optimizer = build_optimizer(spec.train, build_model(spec, 2))
    assert {g["lr"] for g in optimizer.param_groups} == {spec.train.lr}  # one lr for every parameter
    assert problems(write(tmp_path, "bad.yaml", BASE.replace(
        "  - name: cam\n", "  - name: cam\n    train: {optimizer: {lr_classifier_ratio: 0}, epoks: 3}\n"))) == [
        f"{tmp_path / 'bad.yaml'}:9:25: methods[0].train.optimizer.lr_classifier_ratio: Input should be greater than 0",
        f"{tmp_path / 'bad.yaml'}:9:50: methods[0].train.epoks: unknown field (did you mean 'epochs'?)"]


def test_a_run_spec_of_another_version_is_a_clear_input_error(tmp_path):
    from wsolctl.engine.rundir import RunDir
    from wsolctl.errors import InputError

    with pytest.raises(InputError, match="spec.json: not found"):
        RunDir(tmp_path).spec()
    (tmp_path / "spec.json").write_text('{"run_id": "abc", "dataset": {}}')  # the format before RunSpec
    with pytest.raises(InputError, match="not a run spec of this wsolctl version"):
        RunDir(tmp_path).spec()
