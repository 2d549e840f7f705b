"""Everything wsolctl writes follows the user's umask (issue 16): under umask 022 a run's outputs
(results.parquet, report.md, spec.json, done.json, checkpoints, predictions…) and a prediction's
per-input folder and files are 0644 / 0755, so a colleague in the group can read them; atomic
writes (tempfile: 0600 / 0700 whatever the umask) included."""
import os
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsolctl import io


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, set]:
    found = {"files": set(), "dirs": {stat.S_IMODE(root.stat().st_mode)}}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found["dirs" if path.is_dir() else "files"].add(stat.S_IMODE(path.stat().st_mode))
    return found


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_writes_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    with umask(mask):
        io.write_json(tmp_path / "a" / "x.json", {"a": 1})
        io.write_text(tmp_path / "a" / "y.md", "y")
        with io.atomic_directory(tmp_path / "folder") as tmp:
            (tmp / "inside.txt").write_text("z")
    assert modes(tmp_path / "a")["files"] == {file_mode}
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == dir_mode


@pytest.mark.slow
def test_a_run_and_a_prediction_are_group_readable_under_umask_022(tiny_recipe, tmp_path):
    from wsolctl import pipeline
    from wsolctl.predict import PredictOptions, predict

    out, pred = tmp_path / "study", tmp_path / "pred"
    patch = np.full((48, 48, 3), 200, np.uint8)
    patch[10:30, 10:30] = (120, 40, 90)
    Image.fromarray(patch).save(tmp_path / "patch.png")
    with umask(0o022):
        pipeline.train(tiny_recipe, out, quiet=True)
        pipeline.select(out, quiet=True)
        pipeline.report(out)  # report.md and its figures
        result = predict(out, [tmp_path / "patch.png"], pred, PredictOptions(method="cam"), quiet=True)
    assert result.rows[0]["status"] == "ok"
    written = {p.name for p in out.rglob("*")}
    assert {"results.parquet", "report.md", "spec.json", "done.json"} <= written
    assert any(p.suffix == ".pt" for p in out.rglob("*"))
    for root in (out, pred):
        assert modes(root) == {"files": {0o644}, "dirs": {0o755}}, root
    assert (pred / "patch").is_dir() and any((pred / "patch").iterdir())
