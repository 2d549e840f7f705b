"""Find the selected model of a study output directory and score batches of tiles with it.

:func:`load_selected` finds the row of ``results.parquet`` and loads its run's model through
:class:`~wsolctl.engine.rundir.RunDir`: rebuilt with the run's own recipe (backbone, method params,
image size) and the checkpoint of the chosen selection rule.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from wsolctl.errors import InputError
from wsolctl.selection import RULES


@dataclass(frozen=True)
class LoadedModel:
    """A trained model ready for inference, with what predict needs to know about it."""

    model: torch.nn.Module  # the run's WSOLModel, in eval mode, on ``device``
    method: object  # the Method plugin whose maps are drawn (top-down: explains ``model``)
    method_label: str  # as in results.parquet (name, or name[i] when a recipe lists it twice)
    backbone: str
    selection: str  # b-loc | b-cl | b-pseudo
    epoch: int
    run_id: str
    image_size: int  # tiles are resized to this side, as in evaluation
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float  # of (method, backbone, selection), set by the row's threshold_rule; NaN: Otsu per input
    classes: dict[str, int]  # the run's encoding
    map_kind: str  # "probability" (used as is) or "cam" (normalised once per slide)
    device: torch.device

    def class_index(self, value: Union[str, int, None]) -> int:
        """``--class``: a class name or index; default the positive class (index 1)."""
        if value is None:
            value = 1 if len(self.classes) > 1 else 0
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            if value not in self.classes:
                raise InputError(f"--class {value!r}: not a class of this run; choose from {', '.join(self.classes)}")
            return self.classes[value]
        index = int(value)
        if not 0 <= index < len(self.classes):
            raise InputError(f"--class {index}: out of range; this run has classes 0..{len(self.classes) - 1} "
                             f"({', '.join(self.classes)})")
        return index

    def class_name(self, index: int) -> str:
        return next(name for name, i in self.classes.items() if i == index)


def load_selected(run_dir: Path, method: Optional[str] = None, backbone: Optional[str] = None,
                  selection: Optional[str] = None, device: str = "auto", run_id: Optional[str] = None) -> LoadedModel:
    """Rebuild the model that ``selection`` (default: the study's first selection rule) chose for
    ``method`` on ``backbone`` in the study output directory ``run_dir`` (after ``wsolctl select``).
    A choice left out is taken when only one exists; otherwise :class:`InputError` lists the choices
    on one line."""
    import polars as pl

    from wsolctl.engine.build import resolve_device
    from wsolctl.engine.rundir import RunDir

    run_dir = Path(run_dir)
    results_path = run_dir / "results.parquet"
    if not results_path.is_file():
        raise InputError(f"{results_path}: not found; RUN_DIR must be a study output directory after `wsolctl select`")
    if selection is not None and selection not in RULES:
        raise InputError(f"--selection {selection!r}: choose from {', '.join(RULES)}")
    table = pl.read_parquet(results_path)
    selection = selection or _study_rule(run_dir, table)
    rows = table.filter(pl.col("selection") == selection)
    if rows.is_empty():
        raise InputError(f"no model selected by {selection} in {run_dir}; give --selection "
                         f"({', '.join(sorted(set(table['selection'].to_list()))) or 'none: run `wsolctl select` first'})")
    rows = _narrow(rows, "method", method, "--method")
    rows = _narrow(rows, "backbone", backbone, "--backbone")
    rows = _narrow(rows, "run_id", run_id, "--run")  # several folds / seeds of one configuration
    row = rows.row(0, named=True)
    run = RunDir.of(run_dir, row["run_id"])
    classes = run.classes()  # the data's encoding.yaml, recorded by training
    torch_device = resolve_device(device)
    model, spec = run.load_model(epoch=int(row["epoch"]), device=torch_device)
    recipe = spec.recipe
    # top-down methods explain the run's shared classifier
    explainer = spec.methods[spec.labels.index(row["method"])].instantiate()
    for m in (model.method, explainer):
        m.set_epoch(int(row["epoch"]))
    normalize = spec.backbone.normalization()  # as in training and evaluation
    return LoadedModel(model, explainer, row["method"], row["backbone"], selection, int(row["epoch"]), row["run_id"],
                       recipe.image_size, normalize.mean, normalize.std, float(row["threshold"]), classes,
                       getattr(explainer, "map_kind", "cam"), torch_device)


def _study_rule(run_dir: Path, table) -> str:
    """The first of the study's selection rules (its recipe's ``selection``) that chose a model."""
    from wsolctl.engine.rundir import RunDir

    present = set(table["selection"].to_list())
    if not present:
        raise InputError(f"{run_dir / 'results.parquet'}: no selected model; run `wsolctl select {run_dir}` first")
    study = RunDir.of(run_dir, table["run_id"][0]).spec().recipe.selection
    return next((rule for rule in study if rule in present), sorted(present)[0])


def _narrow(rows, column: str, wanted: Optional[str], option: str):
    """Keep the rows whose ``column`` is ``wanted``; without ``wanted`` the column must be unique."""
    import polars as pl

    choices = sorted(set(rows[column].to_list()))
    if wanted is not None:
        if wanted not in choices:
            raise InputError(f"{option} {wanted!r}: not in this run directory; choose from {', '.join(choices) or '(none)'}")
        return rows.filter(pl.col(column) == wanted)
    if len(choices) > 1:
        raise InputError(f"several models to choose from: give {option} (one of {', '.join(choices)})")
    if not choices:
        raise InputError("no selected model in this run directory")
    return rows


class TileScorer:
    """Class probabilities and maps of batches of uint8 tiles, resized and normalised as in evaluation.

    The probabilities come from the forward pass the method's map already makes when it makes one on
    exactly these images (a hook on the model), so CAM-type methods cost one forward per batch."""

    def __init__(self, loaded: LoadedModel, class_index: int):
        self.loaded, self.class_index = loaded, class_index
        self.mean = torch.tensor(loaded.mean, device=loaded.device).view(1, 3, 1, 1)
        self.std = torch.tensor(loaded.std, device=loaded.device).view(1, 3, 1, 1)

    @functools.cached_property
    def map_side(self) -> int:
        """Side of the maps the method makes for one input (probed once on a blank tile)."""
        size = self.loaded.image_size
        return int(self(np.full((1, size, size, 3), 255, np.uint8))[1].shape[-1])

    def tensor(self, tiles: np.ndarray) -> torch.Tensor:
        """(N, S, S, 3) uint8 → normalised (N, 3, S, S) float on the device."""
        images = torch.from_numpy(tiles).to(self.loaded.device, non_blocking=True)
        images = images.permute(0, 3, 1, 2).float().div_(255.0)
        return (images - self.mean) / self.std

    def __call__(self, tiles: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """Probabilities of the class (N,) and its raw maps (N, h, w) on the device."""
        model, images = self.loaded.model, self.tensor(tiles)
        seen: list[torch.Tensor] = []

        def keep_logits(_module, inputs, output) -> None:
            if not seen and inputs and inputs[0] is images:
                seen.append(getattr(output, "logits", output).detach())

        targets = torch.full((len(images),), self.class_index, dtype=torch.long, device=images.device)
        hook = model.register_forward_hook(keep_logits)
        try:
            with torch.no_grad():
                maps = self.loaded.method.cams(model, images, targets)
        finally:
            hook.remove()
        if not seen:
            with torch.no_grad():
                seen.append(model(images).logits)
        probabilities = torch.softmax(seen[0].float(), dim=1)[:, self.class_index]
        return probabilities.cpu().numpy(), maps.detach().float()
