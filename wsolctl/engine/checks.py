"""Randomisation sanity checks of the maps (``evaluation.checks: [model-randomisation]``, opt-in).

Cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018, "Sanity checks for saliency
maps", §3.1): starting from the trained model, the layers are re-initialised one after the other
from the output back to the input — the method's head first, then the backbone's declared stages
(:class:`~wsolctl.models.base.BackboneInfo`) from the last to the first — and after each step the
maps of the same images are compared with the trained model's. A map that keeps its similarity at
every depth does not reflect what the model learned.

* Re-initialisation: every sub-module's own ``reset_parameters()`` (PyTorch's default
  initialisation; BatchNorm back to weight 1, bias 0 and fresh running statistics), under a seed
  derived from the recipe's seed and the depth, on a copy of the model.
* Images: a seeded subset of the test split (``evaluation.check_images``, drawn with the recipe's
  seed), target = the evaluation's target (ground truth by default).
* Similarities, per image, averaged over images: Spearman rank correlation of the raw maps
  (``signed``) and of their absolute values (``abs``), as ``scipy.stats.spearmanr`` (average ranks
  for ties; NaN when a map is constant), and SSIM of the maps as scored (min-max normalised CAMs /
  probabilities, :func:`~wsolctl.metrics.prepare_cams`) with ``skimage.metrics.structural_similarity``
  at ``data_range=1`` (its defaults: 7×7 uniform window). Maps are compared at the image size
  (bilinear), as they are scored.
* Cost: per method and selected model, (1 + stages + 1) map computations on the subset
  (benchmarks/README.md).
"""
from __future__ import annotations

import copy
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsolctl.metrics import prepare_cams

SIMILARITIES = ("spearman_abs", "spearman_signed", "ssim")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (flattened); NaN when either is constant."""
    from scipy.stats import ConstantInputWarning, spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps in [0, 1] (``skimage.metrics.structural_similarity``, ``data_range=1``)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=1.0))


def similarities(trained: tuple[torch.Tensor, torch.Tensor], other: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Mean over images of each similarity; each argument is (raw maps, scored maps), (N, H, W)."""
    raw_a, scored_a = (t.detach().double().cpu().numpy() for t in trained)
    raw_b, scored_b = (t.detach().double().cpu().numpy() for t in other)
    per_image = [(spearman(np.abs(ra), np.abs(rb)), spearman(ra, rb), ssim(sa, sb))
                 for ra, rb, sa, sb in zip(raw_a, raw_b, scored_a, scored_b)]
    return {name: float(np.nanmean(values)) if not np.all(np.isnan(values)) else float("nan")
            for name, values in zip(SIMILARITIES, np.array(per_image, dtype=np.float64).T)}


def cascade_layers(model: torch.nn.Module, stages: Sequence[str]) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) in randomisation order: the head, then the stages from the last to the first;
    stages without weights (e.g. a ResNet's stem activation ``act1``) are left out."""
    layers = [("head", model.head)] if sum(p.numel() for p in model.head.parameters()) else []
    stages = [(name, model.backbone.get_submodule(name)) for name in reversed(stages)]
    return layers + [(name, module) for name, module in stages if sum(p.numel() for p in module.parameters())]


def reinitialise(module: torch.nn.Module, seed: int) -> None:
    """Every sub-module with ``reset_parameters`` back to its initialisation, seeded."""
    with torch.random.fork_rng():  # CPU and CUDA generators restored afterwards
        torch.manual_seed(seed)
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
            if hasattr(sub, "reset_running_stats"):
                sub.reset_running_stats()


def _maps(model, method, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        cams = method.cams(model, images, targets).detach().float()
    raw = F.interpolate(cams[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return raw, prepare_cams(cams, images.shape[-2:], method.map_kind)


def model_randomisation(model, method, images: torch.Tensor, targets: torch.Tensor, stages: Sequence[str],
                        seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Cascading randomisation of a copy of ``model``: rows ``{depth, layer, spearman_abs,
    spearman_signed, ssim}`` (depth 0 = the trained model against itself) and the scored maps of
    every depth, (depth + 1, N, H, W) uint8 (×255), for figures."""
    work = copy.deepcopy(model)
    trained = _maps(work, method, images, targets)
    rows = [{"depth": 0, "layer": "trained", **similarities(trained, trained)}]
    maps = [trained[1]]
    for depth, (name, module) in enumerate(cascade_layers(work, stages), start=1):
        reinitialise(module, seed * 1000 + depth)
        current = _maps(work, method, images, targets)
        rows.append({"depth": depth, "layer": name, **similarities(trained, current)})
        maps.append(current[1])
    stack = torch.stack(maps).cpu().numpy()
    return rows, (stack * 255).round().astype(np.uint8)


def check_subset(n_images: int, cap: int, seed: int) -> list[int]:
    """The seeded subset of test images the checks look at (sorted indices)."""
    count = min(cap, n_images)
    return sorted(np.random.default_rng(seed).choice(n_images, size=count, replace=False).tolist())
