"""A study = every run a recipe implies: the hyper-parameter search on one fold, then the chosen
configurations on every fold and seed. Records what ran and what was chosen (``study.json``,
``runs.parquet``)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from wsolctl.engine.executors import Task, read_status
from wsolctl.engine.plan import RULES, Run, method_labels, plan_runs
from wsolctl.engine.sweep import Variant
from wsolctl.recipe.schema import Recipe


@dataclass(frozen=True)
class Planned:
    variant: Variant
    run: Run
    phase: str  # "search" or "final"

    @property
    def backbone(self) -> str:
        return self.variant.recipe.backbones[self.run.backbone_index].name


def plan(variants: list[Variant], phase: str) -> list[Planned]:
    return [Planned(v, run, phase) for v in variants for run in plan_runs(v.recipe)]


def prerequisites(planned: list[Planned]) -> list[Planned]:
    """The runs that the planned runs build on (each once), to train before them."""
    from wsolctl.recipe.loader import validate_data

    out: dict[str, Planned] = {}
    for p in planned:
        if p.run.prerequisite is not None:
            recipe_dict, run = p.run.prerequisite
            if run.run_id not in out:
                out[run.run_id] = Planned(Variant(validate_data(recipe_dict), {}, "prerequisite"), run, "prerequisite")
    return list(out.values())


def task(planned: Planned, out: Path) -> Task:
    return Task(planned.variant.recipe.resolved_dict(), planned.run.run_id, str(run_dir(out, planned.run.run_id)))


def run_dir(out: Path, run_id: str) -> Path:
    return Path(out) / "runs" / run_id


def best_validation(out: Path, run_id: str) -> dict[str, dict[str, float]]:
    """Per method: the best valpx PxAP and valcl accuracy over epochs (empty if not trained)."""
    path = run_dir(out, run_id) / "epochs.json"
    if not (run_dir(out, run_id) / "done.json").is_file():
        return {}
    best: dict[str, dict[str, float]] = {}
    for row in json.loads(path.read_text()):
        entry = best.setdefault(row["method"], {m: -math.inf for m in RULES.values()})
        for metric in RULES.values():
            if row[metric] is not None and math.isfinite(row[metric]):
                entry[metric] = max(entry[metric], row[metric])
    return best


def choose(search: list[Planned], out: Path) -> dict[str, str]:
    """``"backbone|method|rule" -> config_id``: the best configuration per rule on the search fold
    (ties: the first configuration in expansion order)."""
    chosen: dict[str, tuple[float, str]] = {}
    for planned in search:
        for method, best in best_validation(out, planned.run.run_id).items():
            for rule, metric in RULES.items():
                key = f"{planned.backbone}|{method}|{rule}"
                if best[metric] > chosen.get(key, (-math.inf, ""))[0] or key not in chosen:
                    chosen[key] = (best[metric], planned.variant.config_id)
    return {key: config for key, (_, config) in chosen.items()}


def chosen_variants(search: list[Planned], chosen: dict[str, str]) -> list[Variant]:
    ids = set(chosen.values())
    out, seen = [], set()
    for planned in search:
        if planned.variant.config_id in ids and planned.variant.config_id not in seen:
            seen.add(planned.variant.config_id)
            out.append(planned.variant)
    return out


def save(out: Path, planned: list[Planned], chosen: dict[str, str], durations: dict[str, float]) -> None:
    """Write ``study.json`` (for select) and ``runs.parquet`` (one row per run × method); each run
    appears once, under the phase it ran in."""
    import polars as pl

    from wsolctl.io import write_json, write_parquet

    entries, rows = [], []
    for p in planned:
        status = read_status(run_dir(out, p.run.run_id))
        entries.append({"run_id": p.run.run_id, "phase": p.phase, "config_id": p.variant.config_id,
                        "backbone": p.backbone, "status": status["status"]})
        best = best_validation(out, p.run.run_id)
        labels = method_labels(p.variant.recipe)
        for ref in p.run.methods:
            method = labels[ref.index]
            flags = {rule: chosen.get(f"{p.backbone}|{method}|{rule}") == p.variant.config_id for rule in RULES}
            rows.append({"run_id": p.run.run_id, "phase": p.phase, "config_id": p.variant.config_id,
                         **{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in p.variant.swept.items()},
                         "fold": p.variant.recipe.dataset.fold, "seed": p.variant.recipe.seed, "method": method,
                         "backbone": p.backbone, "status": status["status"], "error": status["error"],
                         "duration_s": durations.get(p.run.run_id),
                         "valpx_pxap": _finite(best.get(method, {}).get("valpx_pxap")),
                         "valcl_acc": _finite(best.get(method, {}).get("valcl_acc")),
                         "chosen_b_loc": flags["b-loc"], "chosen_b_cl": flags["b-cl"],
                         "chosen": any(flags.values())})
    write_json(out / "study.json", {"runs": entries, "chosen": chosen})
    write_parquet(out / "runs.parquet", pl.DataFrame(rows, infer_schema_length=None))


def _finite(value):
    return value if value is not None and math.isfinite(value) else None


def _finite(value):
    return value if value is not None and math.isfinite(value) else None


def _unique(rows: list[dict], key: tuple[str, ...] = ("run_id",)) -> list[dict]:
    """A final run that is also a search run appears once (as 'search', the phase it ran in)."""
    seen, out = set(), []
    for row in rows:
        k = tuple(row[c] for c in key)
        if k not in seen:
            seen.add(k)
            out.append(row)
    return out
