"""Randomisation sanity checks of the maps (``evaluation.checks: [model-randomisation]``, opt-in).

Cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018, "Sanity checks for saliency
maps", §3.1): starting from the trained model, every module that owns parameters is re-initialised,
from the output back to the input — the method's head first, then the backbone's declared stages
(:class:`~wsolctl.backbones.base.BackboneInfo`) from the last to the first, each stage with every
module a forward calls during it (stem, patch embedding, class token, position embedding and final
norm included: :func:`cascade_steps`) — and after each step the maps of the same images are
compared with the trained model's. At the last step the whole model is random
(``params_randomised`` = 1). A map that keeps its similarity at every depth does not reflect what
the model learned. Adebayo et al.'s code walks every block from the logits to the first conv;
Quantus's MPRT resets every module in reverse order; wsolctl groups those modules by stage.

* Re-initialisation: each module's own ``reset_parameters()`` (PyTorch's default initialisation;
  BatchNorm back to weight 1, bias 0 and fresh running statistics), a truncated normal (σ 0.02) for
  parameters of modules without one, under a seed derived from the recipe's seed and the depth, on
  a copy of the model.
* Images: a seeded subset of the test split (``evaluation.check_images``, drawn with the recipe's
  seed), target = the evaluation's target (ground truth by default).
* Similarities, per image, averaged over images (the paper's three): Spearman rank correlation of
  the raw maps (``signed``) and of their absolute values (``abs``), as ``scipy.stats.spearmanr``
  (average ranks for ties; NaN when a map is constant); SSIM of the maps as scored (min-max
  normalised CAMs / probabilities, :func:`~wsolctl.metrics.prepare_cams`) with Gaussian weights
  (:func:`ssim`); and the HOG similarity of the scored maps (:func:`hog_similarity`). Maps are
  compared at the image size (bilinear), as they are scored.
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

SIMILARITIES = ("spearman_abs", "spearman_signed", "ssim", "hog")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (flattened); NaN when either is constant."""
    from scipy.stats import ConstantInputWarning, spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps in [0, 1] with Gaussian weights (σ 1.5, population covariances: Wang et
    al.'s settings, ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``, as Adebayo et al.'s code) at ``data_range=1``: the range the
    scored maps can span (min-max normalised CAMs, probabilities), fixed so that the stabilising
    constants do not depend on the pair (a per-pair range would make two flat maps look unlike)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=1.0,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def hog_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the two maps' histograms of oriented gradients (``skimage.feature.hog``,
    its defaults: 9 orientations, 8×8-pixel cells, 3×3-cell blocks, L2-Hys), Adebayo et al.'s "HOGs
    similarity"; NaN when either is constant or the map is smaller than one block (24 px)."""
    from skimage.feature import hog

    if min(np.shape(a)) < 24:
        return float("nan")
    ha, hb = hog(np.asarray(a, np.float64)), hog(np.asarray(b, np.float64))
    if ha.std() == 0 or hb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ha, hb)[0, 1])


def similarities(trained: tuple[torch.Tensor, torch.Tensor], other: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Mean over images of each similarity (NaN images left out); each argument is (raw maps,
    scored maps), (N, H, W): Spearman on the raw maps, SSIM and HOG on the scored ones."""
    raw_a, scored_a = (t.detach().double().cpu().numpy() for t in trained)
    raw_b, scored_b = (t.detach().double().cpu().numpy() for t in other)
    per_image = [(spearman(np.abs(ra), np.abs(rb)), spearman(ra, rb), ssim(sa, sb), hog_similarity(sa, sb))
                 for ra, rb, sa, sb in zip(raw_a, raw_b, scored_a, scored_b)]
    return {name: float(np.nanmean(values)) if not np.all(np.isnan(values)) else float("nan")
            for name, values in zip(SIMILARITIES, np.array(per_image, dtype=np.float64).T)}


def cascade_steps(model: torch.nn.Module, stages: Sequence[str], images: torch.Tensor
                  ) -> list[tuple[str, list[torch.nn.Module]]]:
    """(step name, modules) in randomisation order, covering every module that owns parameters:
    ``head`` (every module outside the backbone), then the backbone's stages from the last to the
    first. A backbone module belongs to the stage during which one backbone forward of ``images``
    first calls it (so a VGG stage ending at a ReLU takes the convolutions before it; a ViT's class
    token and position embedding, parameters of the model itself, the first block); modules called
    after the last stage (a ViT's final norm) join the last stage, modules never called the first.
    Modules are listed in reverse forward order within a step."""
    def owns(module):
        return next(module.parameters(recurse=False), None) is not None

    in_backbone = {id(m) for m in model.backbone.modules()}
    owners = [m for m in model.backbone.modules() if owns(m)]
    seen: dict[int, tuple[int, int]] = {}  # id(module) -> (stage index, call order)
    current = [0]

    def called(module, _inputs):
        seen.setdefault(id(module), (min(current[0], len(stages) - 1), len(seen)))

    def finished(index):
        def hook(_module, _inputs, _output):
            current[0] = max(current[0], index + 1)
        return hook

    handles = [m.register_forward_pre_hook(called) for m in owners]
    handles += [model.backbone.get_submodule(name).register_forward_hook(finished(i)) for i, name in enumerate(stages)]
    try:
        model.eval()
        with torch.no_grad():
            model.backbone(images[:1])
    finally:
        for handle in handles:
            handle.remove()
    groups: list[list[tuple[int, torch.nn.Module]]] = [[] for _ in stages]
    for position, module in enumerate(owners):
        stage, order = seen.get(id(module), (0, -len(owners) + position))
        groups[stage].append((order, module))
    head = [m for m in model.modules() if owns(m) and id(m) not in in_backbone]
    steps = [("head", head[::-1])] + [(name, [m for _, m in sorted(group, key=lambda x: x[0], reverse=True)])
                                      for name, group in zip(reversed(stages), reversed(groups))]
    return [(name, modules) for name, modules in steps if modules]


def reinitialise(modules: Sequence[torch.nn.Module], seed: int) -> None:
    """Each module back to an initialisation, seeded: its own ``reset_parameters()`` (PyTorch's
    default; BatchNorm also gets fresh running statistics), or, for a module without one (a ViT's
    class token, position embedding, LayerScale), its parameters drawn from a truncated normal of
    σ 0.02 (timm's initialisation of a ViT's position embedding)."""
    with torch.random.fork_rng():  # CPU and CUDA generators restored afterwards
        torch.manual_seed(seed)
        for module in modules:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:
                for param in module.parameters(recurse=False):
                    torch.nn.init.trunc_normal_(param, std=0.02)
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()


def _maps(model, method, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        cams = method.cams(model, images, targets).detach().float()
    raw = F.interpolate(cams[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return raw, prepare_cams(cams, images.shape[-2:], method.map_kind)


def model_randomisation(model, method, images: torch.Tensor, targets: torch.Tensor, stages: Sequence[str],
                        seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Cascading randomisation of a copy of ``model`` (:func:`cascade_steps`): rows ``{depth, layer,
    params_randomised, spearman_abs, spearman_signed, ssim, hog}`` (depth 0 = the trained model
    against itself; ``params_randomised`` the cumulative share of the model's parameters
    re-initialised, 1.0 at the last depth) and the scored maps of every depth, (depth + 1, N, H, W)
    uint8 (×255), for figures."""
    work = copy.deepcopy(model)
    params = {id(p): p.numel() for p in work.parameters()}
    total, done = sum(params.values()) or 1, set()
    trained = _maps(work, method, images, targets)
    rows = [{"depth": 0, "layer": "trained", "params_randomised": 0.0, **similarities(trained, trained)}]
    maps = [trained[1]]
    for depth, (name, modules) in enumerate(cascade_steps(work, stages, images), start=1):
        reinitialise(modules, seed * 1000 + depth)
        done |= {id(p) for m in modules for p in m.parameters(recurse=False)}
        current = _maps(work, method, images, targets)
        rows.append({"depth": depth, "layer": name, "params_randomised": sum(params[i] for i in done) / total,
                     **similarities(trained, current)})
        maps.append(current[1])
    stack = torch.stack(maps).cpu().numpy()
    return rows, (stack * 255).round().astype(np.uint8)


def check_subset(n_images: int, cap: int, seed: int) -> list[int]:
    """The seeded subset of test images the checks look at (sorted indices)."""
    count = min(cap, n_images)
    return sorted(np.random.default_rng(seed).choice(n_images, size=count, replace=False).tolist())
