"""A third-party metric: score contrast, the mean map value inside the ground-truth mask minus the
mean outside it, in percentage points, averaged over the images that have both (higher is better).

One class declares what wsolctl needs (name: the entry point; results column and unit; report
table; no model calls), one meter streams over the split without keeping its maps.
"""
from wsolctl.metrics import Column, MeterContext, Metric, ReportTable


class Contrast(Metric):
    description = "mean map value inside the mask minus outside (percentage points)"
    columns = (Column("contrast", "contrast", unit="pp"),)
    tables = (ReportTable("contrast", "Score contrast", "mean map value inside the mask minus outside it, "
                          "in percentage points, over images with foreground and background"),)

    @classmethod
    def meter(cls, context: MeterContext) -> "ContrastMeter":
        return ContrastMeter()


class ContrastMeter:
    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, maps, masks, images, targets) -> None:
        maps, masks = maps.flatten(1).double(), masks.flatten(1)
        inside, outside = masks.sum(dim=1), (~masks).sum(dim=1)
        both = (inside > 0) & (outside > 0)
        difference = (maps * masks).sum(dim=1) / inside.clamp_min(1) - (maps * ~masks).sum(dim=1) / outside.clamp_min(1)
        self.total += float(difference[both].sum())
        self.count += int(both.sum())

    def compute(self) -> dict[str, float]:
        return {"contrast": 100.0 * self.total / self.count if self.count else float("nan")}
