"""Make docs/figures/predict-overlay.png: ``wsolctl predict`` on a synthetic slide.

    python docs/figures/make_predict_figure.py

The slide is synthetic (benchmarks/slides.py: pink tissue, purple nuclei, two red "tumours"). The
model is the test method of tests/plugins/redness, whose map is each pixel's redness, trained for
one epoch: the figure shows what predict writes (blended heatmap, region outlines in level-0
coordinates scaled to the thumbnail, colour bar with the threshold), not how well a real model
localises.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "plugins" / "redness"), str(ROOT)]


def main() -> None:
    from slides import write_slide

    from tests.test_predict import RECIPE
    from wsolctl import pipeline
    from wsolctl.predict import PredictOptions, predict

    work = Path(tempfile.mkdtemp(prefix="wsolctl-figure-"))
    recipe = work / "redness.yaml"
    recipe.write_text(RECIPE.format(root=work / "data"))
    pipeline.train(recipe, work / "study", quiet=True)
    pipeline.select(work / "study", quiet=True)
    slide = write_slide(work / "synthetic_slide.tif", 6144, 4096, [(2000, 1700, 520), (4300, 2500, 380)])
    options = PredictOptions(method="redness", tile_size=256, overlap=0.25, threshold=0.7)
    result = predict(work / "study", [slide], work / "predicted", options, quiet=True)
    assert result.rows[0]["status"] == "ok", result.rows[0]["error"]
    from PIL import Image

    target = ROOT / "docs" / "figures" / "predict-overlay.png"
    image = Image.open(work / "predicted" / "synthetic_slide" / "overlay.png").convert("RGB")
    image = image.resize((image.width * 2 // 3, image.height * 2 // 3), Image.LANCZOS)
    image.save(target, optimize=True)  # smaller for the repository than the 150-dpi original
    print(f"wrote {target}; outputs in {work / 'predicted'}")


if __name__ == "__main__":
    main()
