"""A test method whose map is known from the image content: the "redness" of each pixel,
clamp(2·(R − (G + B)/2), 0, 1) on the de-normalised image, declared as a probability map. Its
classifier is a linear layer on the image's mean redness. Registered through the entry point in
the dist-info folder beside this file (tests put this folder on sys.path / PYTHONPATH)."""
from wsolctl._lazy import nn, torch
from wsolctl.methods.base import Method, Output

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def redness(images):
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    rgb = images * std + mean
    return (2 * (rgb[:, 0] - (rgb[:, 1] + rgb[:, 2]) / 2)).clamp(0, 1)


class Redness(Method):
    kind = "bottom-up"
    map_kind = "probability"

    def build_head(self, in_channels, num_classes):
        return nn.Linear(1, num_classes)

    def forward(self, model, images, labels=None):
        return Output(logits=model.head(redness(images).mean(dim=(1, 2))[:, None]))

    def cams(self, model, images, targets):
        return redness(images)


class RednessCAM(Redness):
    """The same map declared CAM-type (normalised once per slide), on an arbitrary scale."""

    map_kind = "cam"

    def cams(self, model, images, targets):
        return 5.0 * redness(images) - 1.0
