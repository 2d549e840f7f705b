"""What is installed: the method catalog behind ``wsolctl methods`` (no torch import)."""
from __future__ import annotations

import warnings

from rich.console import Console
from rich.table import Table

from wsolctl import plugins


def method_catalog() -> list[dict]:
    """One dict per importable method plugin; broken plugins are warned about (stderr) and skipped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", plugins.PluginWarning)
        loaded = plugins.load_all("methods")
    for warning in caught:
        Console(stderr=True).print(f"[yellow]warning:[/] {warning.message}")
    rows = []
    for name, cls in sorted(loaded.items()):
        info = plugins.info("methods", name)
        params = {field: _default(spec) for field, spec in cls.Params.model_fields.items()}
        rows.append({"name": name, "kind": cls.kind, "package": f"{info.package} {info.version}",
                     "target": info.target, "api_version": cls.api_version, "params": params,
                     "description": (cls.__doc__ or "").strip().split("\n")[0]})
    return rows


def _default(spec) -> object:
    return None if spec.is_required() else spec.get_default(call_default_factory=True)


def print_catalog(rows: list[dict]) -> None:
    table = Table(title="wsolctl methods")
    for column in ("name", "kind", "package", "parameters (defaults)"):
        table.add_column(column)
    for row in rows:
        params = ", ".join(f"{k}={v!r}" for k, v in row["params"].items()) or "—"
        table.add_row(row["name"], row["kind"], row["package"], params)
    Console().print(table)
