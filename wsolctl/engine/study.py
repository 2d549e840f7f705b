"""A study = every run a recipe implies: the hyper-parameter search on one fold, then the chosen
configurations on every fold and seed. Records what ran and what was chosen (``study.json``,
``runs.parquet``)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from wsolctl.engine.executors import read_status
from wsolctl.engine.plan import RULES, RunSpec
from wsolctl.recipe.sweep import Variant


def prerequisites(runs: list[RunSpec]) -> list[RunSpec]:
    """The runs that ``runs`` build on (each once), to train before them."""
    out: dict[str, RunSpec] = {}
    for run in runs:
        if run.prerequisite is not None:
            out.setdefault(run.prerequisite.run_id, run.prerequisite)
    return list(out.values())


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
            value = row.get(metric)
            if value is not None and math.isfinite(value):
                entry[metric] = max(entry[metric], value)
    return best


def choose(search: list[RunSpec], out: Path) -> dict[str, str]:
    """``"backbone|method|rule" -> config_id``: the best configuration per rule on the search fold
    (ties: the first configuration in expansion order)."""
    chosen: dict[str, tuple[float, str]] = {}
    for run in search:
        for method, best in best_validation(out, run.run_id).items():
            for rule, metric in RULES.items():
                key = f"{run.backbone.name}|{method}|{rule}"
                if best[metric] > chosen.get(key, (-math.inf, ""))[0] or key not in chosen:
                    chosen[key] = (best[metric], run.variant.config_id)
    return {key: config for key, (_, config) in chosen.items()}


def chosen_variants(search: list[RunSpec], chosen: dict[str, str]) -> list[Variant]:
    ids = set(chosen.values())
    out, seen = [], set()
    for run in search:
        if run.variant.config_id in ids and run.variant.config_id not in seen:
            seen.add(run.variant.config_id)
            out.append(run.variant)
    return out


def save(out: Path, runs: list[RunSpec], phases: dict[str, str], chosen: dict[str, str],
         durations: dict[str, float]) -> None:
    """Write ``study.json`` (for select) and ``runs.parquet`` (one row per run × method); each run
    appears once, under the phase (``phases[run_id]``) it ran in."""
    import polars as pl

    from wsolctl.io import write_json, write_parquet

    entries, rows = [], []
    for run in runs:
        phase, config_id, backbone = phases[run.run_id], run.variant.config_id, run.backbone.name
        status = read_status(run_dir(out, run.run_id))
        entries.append({"run_id": run.run_id, "phase": phase, "config_id": config_id, "backbone": backbone,
                        "status": status["status"]})
        best = best_validation(out, run.run_id)
        for method in run.labels:
            flags = {rule: chosen.get(f"{backbone}|{method}|{rule}") == config_id for rule in RULES}
            rows.append({"run_id": run.run_id, "phase": phase, "config_id": config_id,
                         **{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in run.variant.swept.items()},
                         "fold": run.recipe.dataset.fold, "seed": run.recipe.seed, "method": method,
                         "backbone": backbone, "status": status["status"], "error": status["error"],
                         "duration_s": durations.get(run.run_id),
                         "valpx_pxap": _finite(best.get(method, {}).get("valpx_pxap")),
                         "valcl_acc": _finite(best.get(method, {}).get("valcl_acc")),
                         **{f"chosen_{rule.replace('-', '_')}": flag for rule, flag in flags.items()},
                         "chosen": any(flags.values())})
    write_json(out / "study.json", {"runs": entries, "chosen": chosen})
    write_parquet(out / "runs.parquet", pl.DataFrame(rows, infer_schema_length=None))


def _finite(value):
    return value if value is not None and math.isfinite(value) else None
