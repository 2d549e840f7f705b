"""``overlay.png``: an image (slide thumbnail or patch) with the map blended in (jet, α = 0.4, as CLAM
draws it) where the map was computed, the regions' outlines, and a colour bar marking the threshold."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

THUMBNAIL_SIDE = 1024


def resize_map(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float map to (height, width)."""
    from PIL import Image

    return np.asarray(Image.fromarray(values.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR))


def write_overlay(path: Path, image: np.ndarray, heat: np.ndarray, shown: Optional[np.ndarray], label: str,
                  threshold: float, title: str, outlines: Sequence[np.ndarray] = ()) -> None:
    """``image`` (H, W, 3) uint8; ``heat`` in [0, 1] at any size; ``shown`` (same size as heat, bool)
    where the map is drawn (None: everywhere); ``outlines``: closed rings in image pixel (x, y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = image.shape[:2]
    values = resize_map(heat, width, height)
    if shown is not None:
        mask = resize_map(shown.astype(np.float32), width, height) < 0.5
        values = np.ma.masked_array(values, mask)
    aspect = width / max(height, 1)
    fig, ax = plt.subplots(figsize=(min(12.0, 6.0 * aspect) + 1.2, 6.0), dpi=150)
    try:
        ax.imshow(image)
        drawn = ax.imshow(values, cmap="jet", vmin=0.0, vmax=1.0, alpha=0.4, interpolation="bilinear")
        for ring in outlines:
            ax.plot(ring[:, 0] - 0.5, ring[:, 1] - 0.5, color="white", linewidth=1.2)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        bar = fig.colorbar(drawn, ax=ax, fraction=0.046, pad=0.02)
        bar.solids.set_alpha(1.0)
        bar.set_label(label)
        bar.ax.axhline(threshold, color="white", linewidth=2)
        bar.ax.axhline(threshold, color="black", linewidth=1, linestyle="--")
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)
