"""Torch datasets over fold-format samples: training (augmented) and evaluation (resize only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from wsolctl.data.folds import Sample, safe_join
from wsolctl.recipe.base import IMAGENET, Normalize
from wsolctl.recipe.training import Augment


class FoldImages(Dataset):
    """Yields ``(image, label, mask)``; ``mask`` is a bool (S, S) tensor (all False when the sample
    has no mask; an empty tensor when ``with_masks`` is off). With ``augment`` set, images get the
    survey's training augmentation, applied jointly to the mask (colour jitter to the image only).
    Images are normalised with ``normalize`` (the backbone's: ``BackboneSpec.normalization()``)."""

    def __init__(self, root: Path, samples: list[Sample], size: int, augment: Augment | None = None,
                 with_masks: bool = True, normalize: Normalize = IMAGENET):
        self.root, self.samples, self.size = Path(root), samples, size
        self.with_masks = with_masks
        self.to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        self.normalization = normalize
        self.normalize = v2.Normalize(normalize.mean, normalize.std)
        self.augment = _train_transform(size, augment) if augment is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        where = f"sample {sample.image!r}"
        image = Image.open(safe_join(self.root, sample.image, where)).convert("RGB")
        no_mask = torch.zeros(0, dtype=torch.bool)
        if self.augment is not None:
            if not self.with_masks:
                return self.normalize(self.augment(self.to_tensor(image))), sample.label, no_mask
            mask = tv_tensors.Mask(self._mask(sample, where, image.size))
            image, mask = self.augment(tv_tensors.Image(self.to_tensor(image)), mask)
            return self.normalize(image.as_subclass(torch.Tensor)), sample.label, mask.as_subclass(torch.Tensor)
        image = image.resize((self.size, self.size), Image.BILINEAR)
        mask = self._mask(sample, where, (self.size, self.size)) if self.with_masks else no_mask
        return self.normalize(self.to_tensor(image)), sample.label, mask

    def _mask(self, sample: Sample, where: str, size: tuple[int, int]) -> torch.Tensor:
        mask = np.zeros(size[::-1], dtype=bool)
        for path in sample.masks:  # union of instances; any non-zero pixel is foreground
            instance = Image.open(safe_join(self.root, path, where)).convert("L")
            mask |= np.asarray(instance.resize(size, Image.NEAREST)) > 0
        return torch.from_numpy(mask)


def deterministic(augment: Augment) -> bool:
    """Whether ``augment`` draws nothing at random (resize only): every epoch sees the same images."""
    return not augment.crop and augment.hflip == 0 and augment.vflip == 0 and not any(augment.color_jitter)


def unnormalize(images: torch.Tensor, normalize: Normalize) -> torch.Tensor:
    """(N, 3, H, W) normalised images → RGB in [0, 1]."""
    mean = torch.tensor(normalize.mean, dtype=images.dtype, device=images.device)[:, None, None]
    std = torch.tensor(normalize.std, dtype=images.dtype, device=images.device)[:, None, None]
    return (images * std + mean).clamp(0, 1)


def _train_transform(size: int, augment: Augment) -> v2.Compose:
    resize = augment.resize or round(size * 256 / 224)
    steps = [v2.Resize((resize, resize), antialias=True)]
    steps.append(v2.RandomCrop(size) if augment.crop else v2.Resize((size, size), antialias=True))
    steps += [v2.RandomHorizontalFlip(augment.hflip), v2.RandomVerticalFlip(augment.vflip)]
    if any(augment.color_jitter):
        steps.append(v2.ColorJitter(*augment.color_jitter))
    return v2.Compose(steps)
