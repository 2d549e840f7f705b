"""ROAD (Rong et al., ICML 2022), a ``wsolctl.metrics`` plugin (``road``): MoRF, LeRF and their
combination, as pytorch-grad-cam's ROAD metrics. Percentiles: ``evaluation.metric_params.road.percentiles``.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from wsolctl._lazy import F, torch
from wsolctl.metrics.base import Column, MeterContext, Metric, NoParams, ReportTable

__all__ = ["Road", "RoadMeter", "linear_impute", "road_removed"]


class Road(Metric):
    """ROAD MoRF / LeRF / combined (points of target-class probability)."""

    description = "ROAD (noisy linear imputation): probability change as the most / least relevant pixels go"
    columns = (Column("road_morf", "ROAD MoRF", unit="points", lower_is_better=True),
               Column("road_lerf", "ROAD LeRF", unit="points"),
               Column("road_combined", "ROAD combined", unit="points"))
    forward_passes = True
    resampling = "values"
    tables = (ReportTable("road_morf", "ROAD MoRF",
                          "ROAD (Rong et al. 2022): change of the target-class probability (points) when the most "
                          "relevant pixels are imputed (noisy linear), mean over percentiles; lower is better"),
              ReportTable("road_lerf", "ROAD LeRF",
                          "ROAD: the same when the least relevant pixels are imputed; higher is better"))
    survey_rank = 60
    legacy_settings = {"road_percentiles": "percentiles"}

    class Params(NoParams):
        percentiles: list[int] = Field([10, 20, 30, 40, 50, 60, 70, 80, 90], min_length=1,
                                       description="% of pixels imputed at each step (Rong et al. 2022; "
                                                   "pytorch-grad-cam's default list)")

        @field_validator("percentiles")
        @classmethod
        def _percentiles(cls, values: list[int]) -> list[int]:
            if any(not 0 < v < 100 for v in values) or sorted(set(values)) != values:
                raise ValueError("must be increasing percentages strictly between 0 and 100")
            return values

    @classmethod
    def meter(cls, context: MeterContext) -> "RoadMeter":
        return RoadMeter(context.model, context.params.percentiles, context.settings.batch_size)


# ----------------------------------------------------------------------------- ROAD
# Noisy linear imputation (Rong et al., ICML 2022, §4): each removed pixel is the weighted mean of
# its 8 neighbours (edge neighbours 1/6, corner neighbours 1/12, normalised over the neighbours
# inside the image), solved jointly for all removed pixels, plus Gaussian noise of this std (in
# the model's input units).
ROAD_NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6),
                   (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))
ROAD_NOISE = 0.01


def linear_impute(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``image`` (C, H, W) with the ``removed`` (H, W) pixels replaced by the solution of
    ``Σ_j w_ij (x_j − x_i) = 0`` over each removed pixel's neighbours j inside the image (no noise)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    channels, height, width = image.shape
    flat = image.reshape(channels, -1).astype(np.float64)
    unknown = np.flatnonzero(removed.ravel())
    if not len(unknown):
        return image.copy()
    index = np.full(height * width, -1)
    index[unknown] = np.arange(len(unknown))
    ys, xs = np.divmod(unknown, width)
    rows, cols, vals = [], [], []
    diagonal = np.zeros(len(unknown))
    rhs = np.zeros((len(unknown), channels))
    for dy, dx, weight in ROAD_NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        me, neighbour = np.flatnonzero(inside), (ny * width + nx)[inside]
        diagonal[me] += weight
        known = index[neighbour] < 0
        rhs[me[known]] += weight * flat[:, neighbour[known]].T
        rows.append(me[~known])
        cols.append(index[neighbour[~known]])
        vals.append(np.full((~known).sum(), -weight))
    rows.append(np.arange(len(unknown)))
    cols.append(np.arange(len(unknown)))
    vals.append(diagonal)
    system = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(len(unknown), len(unknown))).tocsc()
    solution = spsolve(system, rhs).reshape(len(unknown), channels)
    out = flat.copy()
    out[:, unknown] = solution.T
    return out.reshape(image.shape).astype(image.dtype)


def road_removed(cam: np.ndarray, percentile: float, order: str) -> np.ndarray:
    """The pixels ROAD imputes at ``percentile`` (pytorch-grad-cam's convention): MoRF those at or
    above the map's percentile (the top ≈ 100 − p %), LeRF those of ``1 − map`` at or above its
    percentile (the bottom ≈ 100 − p %)."""
    values = cam if order == "morf" else 1 - cam
    return values >= np.percentile(values, percentile)


class RoadMeter:
    """ROAD (Rong et al., ICML 2022, "A consistent and efficient evaluation strategy for attribution
    methods"), MoRF and LeRF, as pytorch-grad-cam's ``ROADMostRelevantFirstAverage`` /
    ``ROADLeastRelevantFirstAverage`` / ``ROADCombined``: for each percentile p the removed pixels are
    imputed (noisy linear imputation) and the change of the target class's softmax probability from
    the intact image is recorded; each image's score is the mean over percentiles, the split's the
    mean over images, in % (points of probability). Lower ``road_morf`` (a larger drop when the most
    relevant pixels go) and higher ``road_lerf`` mean a more faithful map; ``road_combined`` =
    (LeRF − MoRF) / 2. The maps are the scored maps resized to the input (bilinear), as float32.
    The imputation runs on the CPU (scipy sparse solve, one per image and percentile and order); the
    ``2·len(percentiles) + 1`` forward passes per image are batched in chunks of ``batch_size``. The
    noise is drawn from a generator seeded with ``seed`` (pytorch-grad-cam uses torch's global one)."""

    def __init__(self, model: torch.nn.Module, percentiles=(10, 20, 30, 40, 50, 60, 70, 80, 90),
                 batch_size: int = 32, noise: float = ROAD_NOISE, seed: int = 0):
        self.model, self.percentiles, self.batch_size, self.noise = model, tuple(percentiles), int(batch_size), noise
        self.generator = torch.Generator().manual_seed(seed)
        self._sums = {"morf": 0.0, "lerf": 0.0}
        self._count = 0
        self._per_image: list = []

    def imputed(self, image: torch.Tensor, cam: np.ndarray, percentile: float, order: str) -> torch.Tensor:
        """One image (C, H, W) after ROAD's imputation at ``percentile`` (``order``: morf or lerf)."""
        removed = road_removed(cam, percentile, order)
        filled = torch.from_numpy(linear_impute(image.cpu().numpy(), removed))
        noise = self.noise * torch.randn(filled.shape, generator=self.generator)
        return torch.where(torch.from_numpy(removed), filled + noise, filled).to(image.device, image.dtype)

    def update(self, maps, masks, images, targets) -> None:
        images = images.detach()
        maps = torch.as_tensor(maps).detach().to(images.device).float()
        if maps.shape[-2:] != images.shape[-2:]:
            maps = F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        cams = maps.cpu().numpy()
        jobs = [(i, order, p) for i in range(len(images)) for order in ("morf", "lerf") for p in self.percentiles]
        before = self._probabilities(images, targets)
        after = torch.empty(len(jobs), dtype=torch.float64)
        for lo in range(0, len(jobs), self.batch_size):
            chunk = jobs[lo:lo + self.batch_size]
            batch = torch.stack([self.imputed(images[i], cams[i], p, order) for i, order, p in chunk])
            after[lo:lo + len(chunk)] = self._probabilities(batch, targets[[i for i, _, _ in chunk]])
        change = (after.view(len(images), 2, len(self.percentiles)) - before.view(-1, 1, 1)).mean(dim=2)
        self._sums["morf"] += float(change[:, 0].sum())
        self._sums["lerf"] += float(change[:, 1].sum())
        self._count += len(images)
        morf, lerf = 100.0 * change[:, 0], 100.0 * change[:, 1]
        self._per_image.append(torch.stack([morf, lerf, (lerf - morf) / 2], dim=1))

    def per_image(self) -> np.ndarray:
        """(N, 3): each image's MoRF, LeRF and combined, in points."""
        return torch.cat(self._per_image).numpy() if self._per_image else np.zeros((0, 3))

    def _probabilities(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model(images).logits.float()
        return logits.softmax(dim=1)[torch.arange(len(images)), targets.to(logits.device)].double().cpu()

    def compute(self) -> dict[str, float]:
        if not self._count:
            return {"road_morf": float("nan"), "road_lerf": float("nan"), "road_combined": float("nan")}
        morf, lerf = (100.0 * self._sums[k] / self._count for k in ("morf", "lerf"))
        return {"road_morf": morf, "road_lerf": lerf, "road_combined": (lerf - morf) / 2}
