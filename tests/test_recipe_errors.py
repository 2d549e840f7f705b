"""A corpus of broken recipes: each one exits 2 through the CLI, without a traceback, with one line
per problem that names the file and line (or the --set override), the field and what is wrong."""
import pytest
from typer.testing import CliRunner

from tests.test_recipe import BASE
from wsolctl.cli import app

METHOD = "  - name: cam\n"


def with_method(line: str) -> str:
    return BASE.replace(METHOD, line)


# id: (files, --set overrides, expected first line: source prefix, field, message)
CORPUS = {
    "binary": ({"r.yaml": bytes(range(128, 256)) * 4}, [], ("r.yaml: ", "", "not a UTF-8 text file")),
    "nul-byte": ({"r.yaml": b"name: x\nseed: \x00\n"}, [], ("r.yaml: ", "", "not a UTF-8 text file (byte 0x00 at line 2")),
    "control-char": ({"r.yaml": "name: x\nseed: \x01\n"}, [], ("r.yaml:2:7: ", "", "unacceptable character #x0001")),
    "bad-indentation": ({"r.yaml": "name: x\n  seed: 1\n"}, [], ("r.yaml:2:7: ", "", "YAML syntax: mapping values")),
    "unclosed-flow": ({"r.yaml": BASE + "selection: [b-loc\n"}, [], ("r.yaml:14:1: ", "", "YAML syntax")),
    "tab-indent": ({"r.yaml": "name: x\ntrain:\n\tepochs: 2\n"}, [], ("r.yaml:3:1: ", "", "YAML syntax")),
    "python-tag": ({"r.yaml": BASE + "seed: !!python/object/apply:os.system [echo]\n"}, [],
                   ("r.yaml:13:7: ", "seed", "unsupported tag 'tag:yaml.org,2002:python/object/apply:os.system'")),
    "python-tag-on-mapping": ({"r.yaml": BASE + "evaluation: !!python/object:os.Foo {batch_size: 2}\n"}, [],
                              ("r.yaml:13:13: ", "evaluation", "unsupported tag")),
    "key-not-scalar": ({"r.yaml": "? [a, b]\n: c\n"}, [], ("r.yaml:1:3: ", "", "a key must be a scalar")),
    "recursive-alias": ({"r.yaml": BASE + "extra: &x [*x]\n"}, [], ("r.yaml:13:8: ", "extra[0]", "recursive alias")),
    "alias-bomb": ({"r.yaml": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
                       f"{k}: &{k} [{', '.join([f'*{prev}'] * 10)}]\n" for prev, k in zip("abcd", "bcde"))}, [],
                   ("r.yaml:1:4: ", "e[7][8][8][9]", "more than 100000 values (aliases expanded)")),
    "duplicate-key": ({"r.yaml": BASE + "name: again\n"}, [], ("r.yaml:13:1: ", "name", "duplicate key")),
    "empty-file": ({"r.yaml": ""}, [], ("r.yaml:1:1: ", "name", "field required")),
    "list-at-top": ({"r.yaml": "- name: x\n"}, [], ("r.yaml:1:1: ", "", "a recipe must be a YAML mapping")),
    "scalar-at-top": ({"r.yaml": "just text\n"}, [], ("r.yaml:1:1: ", "", "a recipe must be a YAML mapping")),
    "unknown-field": ({"r.yaml": BASE + "epochs: 3\n"}, [], ("r.yaml:13:1: ", "epochs", "unknown field")),
    "unknown-nested-field": ({"r.yaml": BASE + "  epoks: 3\n"}, [], ("r.yaml:13:3: ", "train.epoks", "unknown field (did you mean 'epochs'?)")),
    "wrong-type": ({"r.yaml": BASE.replace("epochs: 2", "epochs: two")}, [], ("r.yaml:10:3: ", "train.epochs", "valid integer")),
    "out-of-range": ({"r.yaml": BASE + "seed: -1\n"}, [], ("r.yaml:13:1: ", "seed", "greater than or equal to 0")),
    "missing-field": ({"r.yaml": BASE.replace("name: base\n", "")}, [], ("r.yaml:1:1: ", "name", "field required")),
    "unknown-method": ({"r.yaml": with_method("  - name: camm\n")}, [], ("r.yaml:8:5: ", "methods[0].name", "unknown method 'camm'")),
    "unknown-backbone": ({"r.yaml": BASE.replace("resnet18-wsol", "resnet19-wsol")}, [],
                         ("r.yaml:6:5: ", "backbones[0].name", "unknown backbone")),
    "unknown-dataset": ({"r.yaml": BASE.replace("synthetic-glas", "glass")}, [], ("r.yaml:3:3: ", "dataset.name", "unknown dataset")),
    "bad-plugin-param": ({"r.yaml": with_method("  - {name: lse, params: {r: abc}}\n")}, [],
                         ("r.yaml:8:26: ", "methods[0].params.r", "valid number")),
    "unknown-plugin-param": ({"r.yaml": with_method("  - {name: lse, params: {q: 1}}\n")}, [],
                             ("r.yaml:8:26: ", "methods[0].params.q", "unknown field")),
    "plugin-params-check": ({"r.yaml": with_method("  - name: negev\n    params: {size_min: 0.9, size_max: 0.5}\n")}, [],
                            ("r.yaml:9:5: ", "methods[0].params", "size_min must not exceed size_max")),
    "method-backbone-not-in-recipe": ({"r.yaml": with_method("  - {name: cam, backbones: [vgg16-wsol]}\n")}, [],
                                      ("r.yaml:7:1: ", "methods", "names backbones not in the recipe")),
    "missing-base": ({"r.yaml": "_base_: nowhere.yaml\n"}, [], ("r.yaml:1:1: ", "_base_", "base file not found")),
    "base-not-a-path": ({"r.yaml": "_base_: {a: 1}\n"}, [], ("r.yaml:1:1: ", "_base_", "must be a file path")),
    "base-cycle": ({"r.yaml": "_base_: b.yaml\n", "b.yaml": "_base_: r.yaml\n"}, [], ("r.yaml:1:1: ", "_base_", "inheritance cycle: r.yaml -> b.yaml -> r.yaml")),
    "binary-base": ({"r.yaml": "_base_: b.yaml\n", "b.yaml": b"\xff\xfe\x00garbage"}, [], ("b.yaml: ", "", "not a UTF-8 text file")),
    "error-in-base": ({"r.yaml": "_base_: b.yaml\n", "b.yaml": BASE.replace("epochs: 2", "epochs: -2")}, [],
                      ("b.yaml:10:3: ", "train.epochs", "greater than or equal to 0")),
    # --set: reported against the override, never against the file
    "set-unknown-key": ({"r.yaml": BASE}, ["train.epoks=3"], ("--set train.epoks=3: ", "train.epoks", "unknown field")),
    "set-new-path": ({"r.yaml": BASE}, ["foo.bar=1"], ("--set foo.bar=1: ", "foo", "unknown field")),
    "set-new-nested-path": ({"r.yaml": BASE}, ["train.augment.flip.h=1"],
                            ("--set train.augment.flip.h=1: ", "train.augment.flip", "unknown field")),
    "set-wrong-type": ({"r.yaml": BASE}, ["train.epochs=abc"], ("--set train.epochs=abc: ", "train.epochs", "valid integer")),
    "set-no-equals": ({"r.yaml": BASE}, ["train.epochs"], ("--set train.epochs: ", "", "expected KEY=VALUE")),
    "set-empty-key": ({"r.yaml": BASE}, ["=3"], ("--set =3: ", "", "expected KEY=VALUE")),
    "set-empty-part": ({"r.yaml": BASE}, ["train..epochs=3"], ("--set train..epochs=3: ", "train..epochs", "empty key")),
    "set-bad-yaml": ({"r.yaml": BASE}, ["train.epochs=[1"], ("--set train.epochs=[1: ", "train.epochs", "not valid YAML")),
    "set-no-list-item": ({"r.yaml": BASE}, ["methods.3.name=cam"], ("--set methods.3.name=cam: ", "methods[3]", "no such list item")),
    "set-not-a-mapping": ({"r.yaml": BASE}, ["train.epochs.x=1"], ("--set train.epochs.x=1: ", "train.epochs", "is not a mapping")),
    "set-unknown-method": ({"r.yaml": BASE}, ["methods.0.name=camm"], ("--set methods.0.name=camm: ", "methods[0].name", "unknown method")),
    "set-bad-plugin-param": ({"r.yaml": with_method("  - name: lse\n")}, ["methods.0.params.r=abc"],
                             ("--set methods.0.params.r=abc: ", "methods[0].params.r", "valid number")),
    "set-plugin-params-check": ({"r.yaml": with_method("  - name: negev\n    params: {size_max: 0.5}\n")},
                                ["methods.0.params.size_min=0.9"],
                                ("--set methods.0.params.size_min=0.9: ", "methods[0].params", "size_min must not exceed")),
    "set-method-backbone": ({"r.yaml": BASE}, ["methods.0.backbones=[nope]"],
                            ("--set methods.0.backbones=[nope]: ", "methods", "names backbones not in the recipe")),
    "set-subtree-missing-field": ({"r.yaml": BASE}, ["dataset={root: x}"], ("--set dataset={root: x}: ", "dataset.name", "field required")),
}


@pytest.mark.parametrize("files, overrides, expected", CORPUS.values(), ids=CORPUS.keys())
def test_broken_recipe_exits_2_with_source_field_and_message(tmp_path, monkeypatch, files, overrides, expected):
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    sets = [arg for value in overrides for arg in ("--set", value)]
    result = CliRunner().invoke(app, ["validate", "r.yaml", *sets])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    source, field, message = expected
    first = result.stderr.splitlines()[0]
    assert first.startswith(source + (f"{field}: " if field else "")), first
    assert message in first, first
    assert all(line.startswith(("r.yaml", "b.yaml", "--set ")) for line in result.stderr.splitlines())
