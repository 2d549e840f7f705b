"""A metric the project does not ship, in one file: the energy-based pointing game (Wang et al.,
Score-CAM, CVPRW 2020, §5.2), the share of each map's mass that lies in the ground-truth mask,
averaged over the images with foreground. Registered through the entry point in the dist-info
folder beside this file (tests put this folder on sys.path)."""
from wsolctl.metrics import Column, Metric, ReportTable


class EnergyPointing(Metric):
    description = "share of the map's mass inside the mask"
    columns = (Column("energy_pointing", "energy pointing"),)
    tables = (ReportTable("energy_pointing", "Energy pointing game", "% of each map's mass inside the mask"),)

    @classmethod
    def meter(cls, context):
        return EnergyMeter()


class EnergyMeter:
    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, maps, masks, images, targets):
        maps = maps.flatten(1).double()
        inside = (maps * masks.flatten(1)).sum(dim=1) / maps.sum(dim=1).clamp_min(1e-12)
        counted = masks.flatten(1).any(dim=1)
        self.total += float(inside[counted].sum())
        self.count += int(counted.sum())

    def compute(self):
        return {"energy_pointing": 100.0 * self.total / self.count if self.count else float("nan")}
