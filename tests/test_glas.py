"""GlaS as distributed (BMP images + *_anno.bmp + Grade.csv) → fold files."""
import numpy as np
import pytest
from PIL import Image

from wsolctl.data.folds import Sample, read_encoding, read_split
from wsolctl.data.glas import GlaS, GlaSParams
from wsolctl.errors import DataError

HEADER = "name, patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)\n"


def _warwick(root, n_benign=10, n_malignant=10, n_test_a=3, n_test_b=3):
    """A fake Warwick release: tiny BMPs, instance-label annotations, Grade.csv with stray spaces."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    names = [(f"train_{i + 1}", "benign" if i < n_benign else "malignant") for i in range(n_benign + n_malignant)]
    names += [(f"testA_{i + 1}", ("benign", "malignant")[i % 2]) for i in range(n_test_a)]
    names += [(f"testB_{i + 1}", ("malignant", "benign")[i % 2]) for i in range(n_test_b)]
    for name, grade in names:
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(root / f"{name}.bmp")
        anno = np.zeros((12, 16), np.uint8)
        anno[2:6, 3:9], anno[7:10, 10:14] = 1, 2  # two gland instances
        Image.fromarray(anno).save(root / f"{name}_anno.bmp")
        rows.append(f"{name},{len(rows) // 2 + 1}, {grade}, {'adenomatous' if grade == 'malignant' else 'healthy'}\n")
    (root / "Grade.csv").write_text(HEADER + "".join(rows))
    return root


def test_folds_counts_stratification_and_paths(tmp_path):
    root = _warwick(tmp_path / "Warwick QU")
    dataset = GlaS(GlaSParams(valpx_per_class=2))
    dataset.prepare(root, 0)
    folds = dataset.folds_dir(root)
    assert folds == root / "wsolctl-folds"
    assert read_encoding(folds) == {"benign": 0, "malignant": 1}
    for fold in range(5):
        split = {s: read_split(folds, fold, s) for s in ("train", "valcl", "valpx", "test")}
        labels = {s: [x.label for x in v] for s, v in split.items()}
        assert (labels["valcl"].count(0), labels["valcl"].count(1)) == (2, 2)  # ceil(20 % of 10)
        assert (labels["train"].count(0), labels["train"].count(1)) == (8, 8)
        assert (labels["valpx"].count(0), labels["valpx"].count(1)) == (2, 2)
        train, val = {x.image for x in split["train"]}, {x.image for x in split["valcl"]}
        assert not train & val and {x.image for x in split["valpx"]} <= val
        assert [x.image for x in split["test"]] == [f"testA_{i}.bmp" for i in (1, 2, 3)] + [f"testB_{i}.bmp" for i in (1, 2, 3)]
        for sample in split["test"]:
            assert sample.size == (16, 12) and sample.masks == (sample.image.replace(".bmp", "_anno.bmp"),)
            assert (root / sample.image).is_file() and (root / sample.masks[0]).is_file()
    assert len({tuple(x.image for x in read_split(folds, k, "valcl")) for k in range(5)}) > 1  # folds differ


def test_survey_counts_67_18_6():
    train = [Sample(f"train_{i}.bmp", int(i >= 37)) for i in range(85)]  # 37 benign, 48 malignant
    split = GlaS()._split(train, 0)
    assert [len(split[s]) for s in ("train", "valcl", "valpx")] == [67, 18, 6]


def test_deterministic_reused_and_regenerated(tmp_path):
    root = _warwick(tmp_path / "w")
    GlaS().prepare(root, 1)
    folds = root / "wsolctl-folds"
    first = {p.relative_to(folds): p.read_bytes() for p in folds.rglob("*.txt")}
    stamp_time = (folds / "wsolctl-glas.json").stat().st_mtime_ns
    GlaS().prepare(root, 1)  # reused, not rewritten
    assert (folds / "wsolctl-glas.json").stat().st_mtime_ns == stamp_time
    other = tmp_path / "copy"
    GlaS(GlaSParams(folds_dir=str(other))).prepare(root, 0)
    assert {p.relative_to(other): p.read_bytes() for p in other.rglob("*.txt")} == first
    GlaS(GlaSParams(seed=3)).prepare(root, 0)  # other params: regenerated in place
    changed = {p.relative_to(folds): p.read_bytes() for p in folds.rglob("*.txt")}
    assert changed != first and not list(tmp_path.glob("w/.wsolctl-folds*"))


@pytest.mark.parametrize("edit, message", [
    (lambda r: (r / "Grade.csv").write_text("name, patient ID, grade\ntrain_1,1, benign\n"), r"Grade.csv:1: missing column\(s\) 'grade \(GlaS\)'"),
    (lambda r: (r / "Grade.csv").write_text(HEADER + "train_1,1, bening, healthy\n"), r"Grade.csv:2: grade \(GlaS\) must be benign or malignant, got 'bening'"),
    (lambda r: (r / "Grade.csv").write_text(HEADER + "train_1,1, benign, x\ntrain_1,1, benign, x\n"), r"Grade.csv:3: 'train_1' is listed twice"),
    (lambda r: (r / "Grade.csv").unlink(), r"Grade.csv: file not found"),
    (lambda r: (r / "train_3_anno.bmp").unlink(), r"train_3_anno.bmp: annotation of train_3.bmp not found"),
    (lambda r: (r / "testB_2.bmp").unlink(), r"testB_2.bmp: listed in .*Grade.csv but not found"),
])
def test_errors_name_file_and_problem(tmp_path, edit, message):
    root = _warwick(tmp_path / "w")
    edit(root)
    with pytest.raises(DataError, match=message):
        GlaS().prepare(root, 0)
    assert not (root / "wsolctl-folds").exists()


def test_recipe_with_glas_validates(tmp_path):
    from tests.conftest import TINY
    from wsolctl.recipe import load_recipe

    root = _warwick(tmp_path / "w")
    text = TINY.format(root=root).replace("name: synthetic-glas", "name: glas").replace(
        "params: {size: 64, train_per_class: 6, test_per_class: 3, folds: 2, valpx_per_class: 1}", "params: {folds: 2}")
    (tmp_path / "r.yaml").write_text(text)
    recipe = load_recipe(tmp_path / "r.yaml")
    dataset = GlaS(recipe.dataset.params)
    dataset.prepare(root, 1)
    assert len(read_split(dataset.folds_dir(root), 1, "test")) == 6
