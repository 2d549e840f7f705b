"""Torch datasets over fold-format samples: training (augmented) and evaluation (resize only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from wsolctl.data.folds import Sample, safe_join
from wsolctl.recipe.schema import Augment

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as in the survey


class FoldImages(Dataset):
    """Yields ``(image, label, mask)``; ``mask`` is a bool (S, S) tensor (all False when the sample
    has no mask). With ``augment`` set, images get the survey's training augmentation instead."""

    def __init__(self, root: Path, samples: list[Sample], size: int, augment: Augment | None = None,
                 with_masks: bool = True):
        self.root, self.samples, self.size = Path(root), samples, size
        self.with_masks = with_masks
        self.to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        self.normalize = v2.Normalize(MEAN, STD)
        self.augment = _train_transform(size, augment) if augment is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        where = f"sample {sample.image!r}"
        image = Image.open(safe_join(self.root, sample.image, where)).convert("RGB")
        if self.augment is not None:
            return self.normalize(self.augment(self.to_tensor(image))), sample.label, torch.zeros(0, dtype=torch.bool)
        image = image.resize((self.size, self.size), Image.BILINEAR)
        mask = self._mask(sample, where) if self.with_masks else torch.zeros(0, dtype=torch.bool)
        return self.normalize(self.to_tensor(image)), sample.label, mask

    def _mask(self, sample: Sample, where: str) -> torch.Tensor:
        mask = np.zeros((self.size, self.size), dtype=bool)
        for path in sample.masks:  # union of instances; any non-zero pixel is foreground
            instance = Image.open(safe_join(self.root, path, where)).convert("L")
            mask |= np.asarray(instance.resize((self.size, self.size), Image.NEAREST)) > 0
        return torch.from_numpy(mask)


def _train_transform(size: int, augment: Augment) -> v2.Compose:
    resize = augment.resize or round(size * 256 / 224)
    steps = [v2.Resize((resize, resize), antialias=True)]
    steps.append(v2.RandomCrop(size) if augment.crop else v2.Resize((size, size), antialias=True))
    steps += [v2.RandomHorizontalFlip(augment.hflip), v2.RandomVerticalFlip(augment.vflip)]
    if any(augment.color_jitter):
        steps.append(v2.ColorJitter(*augment.color_jitter))
    return v2.Compose(steps)
