"""What ``wsolctl predict`` is given: its options, and the inputs (slides and images) found in the
paths named, each with its output folder and annotation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from wsolctl.errors import InputError
from wsolctl.executors import ExecutorName
from wsolctl.selection import RuleName
from wsolctl.wsi.slide import SLIDE_SUFFIXES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class PredictOptions(BaseModel):
    """What ``wsolctl predict`` takes besides RUN_DIR, the inputs and the output folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Optional[str] = Field(None, description="method label in results.parquet; default: the only one")
    backbone: Optional[str] = Field(None, description="default: the only one")
    selection: Optional[RuleName] = Field(None, description="default: the first of the study's selection rules")
    run: Optional[str] = Field(None, description="run id, when several folds / seeds hold the same model")
    target: Optional[Union[int, str]] = Field(None, description="class name or index; default the positive class (1)")
    tile_size: int = Field(512, ge=16, le=8192, description="tile side in pixels at `level`")
    level: int = Field(0, ge=0, le=12, description="read tiles at downsample 2**level")
    mpp: Optional[float] = Field(None, gt=0, description="µm per tile pixel, instead of `level` (default with "
                                 "level 0: the mpp the study's data were sampled at, if recorded)")
    overlap: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of a tile shared with its neighbour")
    batch_size: int = Field(16, ge=1, le=4096)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    threshold: Optional[float] = Field(None, ge=0.0, le=1.0, description="default: the run's τ*")
    min_tissue: float = Field(0.1, ge=0.0, le=1.0, description="tiles with less tissue are not predicted")
    tissue_downsample: float = Field(64, ge=1, description="overview downsample for Otsu tissue detection")
    readers: int = Field(4, ge=1, le=64, description="tile-reading threads per slide")
    workers: int = Field(1, ge=1, le=256, description="inputs predicted in parallel")
    executor: ExecutorName = "local"
    annotations: Optional[Path] = Field(None, description="folder of ASAP XML files named after the slides")

    def model_args(self) -> tuple:
        return (self.method, self.backbone, self.selection, self.device, self.run)


@dataclass(frozen=True)
class Input:
    path: Path
    kind: str  # slide | image
    name: str  # output folder name: the file stem


@dataclass(frozen=True)
class Job:
    input: Input
    folder: Path
    key: str
    xml: Optional[Path]
    run_dir: Path
    options: PredictOptions


def discover_inputs(paths: list[Path]) -> list[Input]:
    """Files and folders (searched recursively) → inputs; names must be unique (they name folders)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                            and p.suffix.lower() in SLIDE_SUFFIXES + IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    if not found:
        raise InputError(f"no slides or images in {', '.join(map(str, paths))} ({', '.join(SLIDE_SUFFIXES + IMAGE_SUFFIXES)})")
    inputs, names = [], {}
    for path in found:
        name = path.stem
        if name.lower() in names:
            raise InputError(f"{path}: name {name!r} also used by {names[name.lower()]}; outputs go to OUT/<name>/")
        names[name.lower()] = path
        inputs.append(Input(path, _kind(path), name))
    return inputs


def _kind(path: Path) -> str:
    """png/jpg are images; a TIFF is a slide when tiled or pyramidal, else an image (a patch)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                return "slide" if tif.pages[0].is_tiled or len(tif.series[0].levels) > 1 else "image"
        except Exception:  # unreadable: let the slide reader report it for this input
            return "slide"
    return "slide"


def annotation_of(folder: Optional[Path], name: str) -> Optional[Path]:
    if folder is None:
        return None
    matches = [p for p in sorted(Path(folder).rglob("*.xml")) if p.stem.lower() == name.lower()]
    return matches[0] if matches else None

