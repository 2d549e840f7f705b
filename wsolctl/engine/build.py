"""Build what a run needs from its :class:`~wsolctl.engine.plan.RunSpec`: device, data loaders, model,
optimizer, scheduler (a trained model: :meth:`wsolctl.engine.rundir.RunDir.load_model`)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsolctl.backbones.freeze import freeze
from wsolctl.data.folds import read_encoding, read_split
from wsolctl.data.images import FoldImages
from wsolctl.engine.model import WSOLModel
from wsolctl.engine.plan import RunSpec
from wsolctl.recipe.schema import Recipe
from wsolctl.recipe.training import Train


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def seed_everything(*seeds: int) -> None:
    """Seed every RNG from a tuple (e.g. recipe seed and epoch), so that a resumed run draws the
    same numbers as an uninterrupted one (data-loader shuffling and worker seeds derive from torch's
    global generator)."""
    seed = int(np.random.SeedSequence(list(seeds)).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Data:
    root: Path
    classes: dict[str, int]
    train: DataLoader
    valcl: DataLoader
    valpx: DataLoader
    test: DataLoader
    _baselines: dict[int, float] = field(default_factory=dict, repr=False)  # all_foreground_pxap, per thresholds

    def all_foreground_pxap(self, thresholds: int) -> float:
        """PxAP of an all-foreground (constant) map on the test set: the fraction of ROI pixels, in %.
        Computed once per data set (the runs sharing it share the value)."""
        if thresholds not in self._baselines:
            from wsolctl.metrics import LocalizationMeter

            meter = LocalizationMeter(thresholds)
            for _, _, masks in self.test:
                meter.update(torch.zeros(masks.shape), masks)
            self._baselines[thresholds] = meter.compute().pxap
        return self._baselines[thresholds]


def prepare_dataset(recipe: Recipe) -> object:
    dataset = recipe.dataset.instantiate()
    dataset.prepare(Path(recipe.dataset.root), recipe.dataset.fold)
    return dataset


def build_data(spec: RunSpec, device: torch.device) -> Data:
    recipe = spec.recipe
    dataset = prepare_dataset(recipe)
    root, fold = Path(recipe.dataset.root), recipe.dataset.fold
    folds_dir = dataset.folds_dir(root)
    size, train_cfg, eval_cfg = recipe.image_size, spec.train, recipe.evaluation
    pin = device.type == "cuda"
    # Training masks are loaded only when some method is trained on them (fully supervised).
    train_masks = any(m.plugin.needs_masks for m in recipe.methods)
    normalize = spec.backbone.normalization()

    def loader(split: str, train: bool = False) -> DataLoader:
        samples = read_split(folds_dir, fold, split)
        if not recipe.dataset.masks:  # an unannotated study: no mask is read, every mask is empty
            samples = [replace(s, masks=(), ignore=None) for s in samples]
        images = FoldImages(root, samples, size, augment=train_cfg.augment if train else None,
                            with_masks=split in ("valpx", "test") or (train and train_masks), normalize=normalize)
        return DataLoader(images, batch_size=train_cfg.batch_size if train else eval_cfg.batch_size,
                          shuffle=train, drop_last=False, num_workers=train_cfg.workers, pin_memory=pin)

    return Data(root, read_encoding(folds_dir), loader("train", train=True), loader("valcl"), loader("valpx"), loader("test"))


def build_model(spec: RunSpec, num_classes: int, pretrained: bool = True) -> WSOLModel:
    """The run's model, freshly initialised (load a checkpoint's state dict into it to get the
    trained one; see :meth:`wsolctl.engine.rundir.RunDir.load_model`). ``pretrained=False`` skips the backbone's pretrained
    weights, for a model whose every weight a checkpoint replaces next."""
    backbone = spec.backbone.instantiate()
    trainer = spec.methods[0].instantiate()  # all methods of a run share its classifier
    info = backbone.info()
    module = backbone.build(spec.backbone.pretrained if pretrained else False)
    frozen = freeze(module, info, spec.backbone.freeze)
    return WSOLModel(module, trainer, num_classes, info, backbone.classifier_prefixes, frozen,
                     backbone.decoder_at_classifier_lr)


def build_optimizer(train: Train, model: WSOLModel) -> torch.optim.Optimizer:
    opt, lr = train.optimizer, train.lr
    groups = model.param_groups(lr, opt.lr_classifier_ratio)
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=opt.momentum, nesterov=opt.nesterov and opt.momentum > 0,
                               weight_decay=opt.weight_decay)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, weight_decay=opt.weight_decay)


def build_scheduler(train: Train, optimizer: torch.optim.Optimizer):
    """Per-epoch schedule; the survey's step decay never goes below ``min_lr``."""
    sched, epochs = train.scheduler, max(train.epochs, 1)
    base = [g["lr"] for g in optimizer.param_groups]

    def factor(epoch: int, base_lr: float) -> float:
        if sched.name == "step":
            value = sched.gamma ** (epoch // sched.step_size)
        elif sched.name == "cosine":
            value = 0.5 * (1 + np.cos(np.pi * min(epoch, epochs) / epochs))
        else:
            value = 1.0
        return max(value, sched.min_lr / base_lr)

    lambdas = [lambda e, b=b: factor(e, b) for b in base]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
