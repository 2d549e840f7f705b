"""Render docs/figures/synthetic-samples.png: a visual check of the synthetic H&E datasets.

Rows: GlaS benign, GlaS malignant, Camelyon normal, Camelyon metastatic. Columns: four seeds,
each shown as the plain image and as a copy with the ROI mask contour drawn on top.

    python docs/figures/make_synthetic_samples.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wsolctl.data.histology import render_camelyon, render_glas  # noqa: E402

SIZE = 256
SEEDS = (0, 1, 2, 3)
ROWS = (
    ("GlaS benign", render_glas, False),
    ("GlaS malignant", render_glas, True),
    ("Camelyon normal", render_camelyon, False),
    ("Camelyon metastatic", render_camelyon, True),
)
OUT = Path(__file__).with_name("synthetic-samples.png")


def main() -> Path:
    fig, axes = plt.subplots(len(ROWS), 2 * len(SEEDS), figsize=(2 * len(SEEDS) * 2.0,
                                                                  len(ROWS) * 2.1))
    for row, (title, render, positive) in enumerate(ROWS):
        for col, seed in enumerate(SEEDS):
            image, mask = render(seed, SIZE, positive)
            plain, outlined = axes[row, 2 * col], axes[row, 2 * col + 1]
            plain.imshow(image)
            outlined.imshow(image)
            if mask.any():
                outlined.contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
            plain.set_title(f"seed {seed}", fontsize=8)
            outlined.set_title(f"mask {mask.mean():.0%}", fontsize=8)
        axes[row, 0].set_ylabel(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    plt.close(fig)
    return OUT


if __name__ == "__main__":
    print(main())
