"""Frozen encoders at feature speed (``train.feature_cache``): the encoder outputs of the training set
and of ``valcl`` are computed once, stored on disk, and the heads train and are checked on them.

Valid only for a wholly frozen backbone (``freeze: true``: its output depends on the input alone,
BatchNorm statistics fixed) and methods whose training uses nothing but that output
(``Method.feature_cache_refusal``); the recipe validation enforces both. The per-epoch ``valcl``
accuracy reads the stored ``valcl`` outputs (evaluation transform, no augmentation: exactly what the
encoder would compute again); the ``valpx`` maps, selection's test and predict still run the whole
model, so top-down maps and probability maps are unchanged.

Augmentation policy: ``train.feature_copies`` = K copies of the training set are encoded, each with
the run's training augmentation drawn from its own seed; epoch e trains on copy (e-1) mod K, its
batches shuffled as the uncached loader shuffles them. With a deterministic augment (``crop: false``,
no flips, no colour jitter) one copy is exactly what uncached training feeds the encoder every epoch;
with a random one, K copies stand for fresh draws each epoch (an approximation the docs state).

Storage, next to the data unless moved (``train.feature_cache_dir``, else the environment variable
``WSOLCTL_FEATURE_CACHE``, e.g. for read-only shared data): ``<dataset root>/features/<key>/copy-NN/chunk-NNNNN.npy`` and
``valcl/chunk-NNNNN.npy`` (float32, one chunk per encoding batch, read through memory maps: never all
in RAM), their labels, and ``meta.json``, written last. The key hashes what determines the outputs:
backbone (name, params, weights), normalisation, image size, augmentation (and its seed when random),
number of copies, torch and timm versions, and a fingerprint of the training and valcl splits (sample
ids, labels, file sizes and times). A cache is built in a temporary folder and renamed,
so concurrent runs and interrupted builds never leave a partial one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wsolctl.data.images import deterministic
from wsolctl.engine.build import Data, seed_everything
from wsolctl.engine.plan import RunSpec, numbers
from wsolctl.io import write_json

FORMAT = 2  # bump when the stored layout changes (2: valcl stored too)
COPY_SEED = 1_000_003  # copy c of the training set is augmented under seed (recipe seed, COPY_SEED + c)

CACHE_ENV = "WSOLCTL_FEATURE_CACHE"  # moves every feature cache (train.feature_cache_dir wins)


class FeatureCache:
    """The stored encoder outputs of a run's training set (:meth:`loader`: an epoch's batches) and of
    its valcl split (:meth:`valcl`)."""

    def __init__(self, folder: Path, data: Data):
        self.folder = folder
        self.meta = json.loads((folder / "meta.json").read_text())
        self.data = data

    def loader(self, epoch: int) -> DataLoader:
        """Batches of (features, labels, masks) for ``epoch`` (≥ 1), shuffled as ``data.train`` is."""
        copy = (epoch - 1) % self.meta["copies"]
        train = self.data.train
        return DataLoader(StoredFeatures(self.folder / f"copy-{copy:02d}", self.folder / "labels.npy", self.meta["chunk"]),
                          batch_size=train.batch_size, shuffle=True, drop_last=train.drop_last)

    def valcl(self) -> DataLoader:
        """valcl's (features, labels, masks) in valcl's order and batches."""
        return DataLoader(StoredFeatures(self.folder / "valcl", self.folder / "valcl" / "labels.npy",
                                         self.data.valcl.batch_size), batch_size=self.data.valcl.batch_size)


class StoredFeatures(Dataset):
    """One split's (or copy's) chunks of ``chunk`` rows, memory-mapped; yields (feature map, label,
    empty mask)."""

    def __init__(self, folder: Path, labels: Path, chunk: int):
        self.labels = np.load(labels)
        self.chunk, self.count = chunk, len(self.labels)
        self.chunks = [np.load(folder / f"chunk-{i:05d}.npy", mmap_mode="r")
                       for i in range(-(-self.count // self.chunk))]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        row = self.chunks[index // self.chunk][index % self.chunk]
        return torch.from_numpy(np.array(row)), int(self.labels[index]), torch.zeros(0, dtype=torch.bool)


def prepare(spec: RunSpec, data: Data, model: nn.Module, device: torch.device, progress) -> Optional[FeatureCache]:
    """The run's feature cache (built now if missing), or None when the run does not ask for one."""
    train = spec.train
    if not train.feature_cache:
        return None
    folder = cache_root(train, data) / cache_key(spec, data)
    if not (folder / "meta.json").is_file():
        _build(folder, spec, data, model, device, progress)
    return FeatureCache(folder, data)


def cache_root(train, data: Data) -> Path:
    """Where feature caches live: ``train.feature_cache_dir``, else ``$WSOLCTL_FEATURE_CACHE``, else
    ``<dataset root>/features`` (the key tells caches of different data apart in a shared folder)."""
    chosen = train.feature_cache_dir or os.environ.get(CACHE_ENV)
    return Path(chosen) if chosen else Path(data.root) / "features"


def cache_key(spec: RunSpec, data: Data) -> str:
    train, backbone = spec.train, spec.backbone
    random_augment = not deterministic(train.augment)
    import timm

    key = {"format": FORMAT, "backbone": numbers(backbone, exclude={"freeze", "normalize"}),
           "weights": _file_stamp(Path(backbone.pretrained)) if isinstance(backbone.pretrained, str) else None,
           "normalize": backbone.normalization().model_dump(mode="json"), "image_size": spec.recipe.image_size,
           "augment": train.augment.model_dump(mode="json"), "copies": train.feature_copies,
           # random draws depend on the seed and on how many loader workers draw them
           "seed": (spec.recipe.seed, train.workers) if random_augment else None,
           "versions": (torch.__version__, timm.__version__), "data": _fingerprint(data)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _fingerprint(data: Data) -> list:
    """The training and valcl splits as sample ids, labels and their files' sizes and modification times."""
    return [[(s.image, s.label, *_file_stamp(loader.dataset.root / s.image)) for s in loader.dataset.samples]
            for loader in (data.train, data.valcl)]


def _file_stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _build(folder: Path, spec: RunSpec, data: Data, model: nn.Module, device: torch.device, progress) -> None:
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset, train = data.train.dataset, spec.train
    encode = DataLoader(dataset, batch_size=data.valcl.batch_size, shuffle=False, num_workers=train.workers)
    use_amp = device.type == "cuda" if train.amp == "auto" else bool(train.amp)
    count = len(dataset)
    task = progress.task(f"run {spec.run_id}: encoding the training set and valcl once",
                         train.feature_copies * len(encode) + len(data.valcl))
    was_training = model.training
    model.eval()
    try:
        for copy in range(train.feature_copies):
            seed_everything(spec.recipe.seed, COPY_SEED + copy)
            shape = _encode(model, encode, tmp / f"copy-{copy:02d}", device, use_amp, task)
        _encode(model, data.valcl, tmp / "valcl", device, use_amp, task)
    finally:
        model.train(was_training)
    task.close()
    np.save(tmp / "labels.npy", np.array([s.label for s in dataset.samples], np.int64))
    np.save(tmp / "valcl" / "labels.npy", np.array([s.label for s in data.valcl.dataset.samples], np.int64))
    write_json(tmp / "meta.json", {"count": count, "chunk": encode.batch_size, "copies": train.feature_copies,
                                   "shape": shape, "run_id": spec.run_id})
    try:
        tmp.rename(folder)
    except OSError:  # another run stored the same cache meanwhile
        if not (folder / "meta.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _encode(model: nn.Module, loader: DataLoader, folder: Path, device: torch.device, use_amp: bool, task) -> list:
    """The backbone's outputs of every batch of ``loader``, one chunk file each, into ``folder``;
    returns one output's shape."""
    folder.mkdir(parents=True)
    shape = []
    for i, (images, _, _) in enumerate(loader):
        with torch.no_grad(), torch.autocast(device.type, enabled=use_amp):
            features = model.backbone(images.to(device))
        np.save(folder / f"chunk-{i:05d}.npy", features.float().cpu().numpy())
        shape = list(features.shape[1:])
        task.advance()
    return shape


class OnFeatures(nn.Module):
    """``model`` as its heads see stored encoder outputs: the same head and method (shared, not
    copied) behind an identity backbone, used in ``model``'s place while the heads train and are
    checked on the cache; ``model`` itself is left whole."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = nn.Identity()
        self.head = model.head
        self.method = model.method

    def forward(self, features: torch.Tensor, labels: Optional[torch.Tensor] = None):
        return self.method.forward(self, features, labels)
