"""Seed a Hugging Face hub cache the way a download leaves it (no network):
``models--org--name/{blobs/<sha256>, refs/main, snapshots/<rev>/<file> -> ../../blobs/<sha256>}``."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"


def seed_file(cache: Path, repo_id: str, filename: str, data: bytes) -> Path:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    link = repo / "snapshots" / REVISION / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def seed_timm(cache: Path, arch: str, seed: int = 0, config: bool = False) -> tuple[str, dict]:
    """Random weights of timm ``arch`` (its full ImageNet state dict, head included) as
    ``model.safetensors`` in the repository timm's default pretrained tag names, plus ``config.json``
    (what ``hf-hub:`` names read) when asked. Returns (repository id, the seeded state dict)."""
    import timm
    import torch
    from safetensors.torch import save

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    repo = model.pretrained_cfg["hf_hub_id"]
    seed_file(cache, repo, "model.safetensors", save(state))
    if config:  # written by timm's own exporter, as in the repositories timm publishes
        from timm.models._hub import save_config_for_hf

        with tempfile.TemporaryDirectory() as tmp:
            save_config_for_hf(model, f"{tmp}/config.json")
            seed_file(cache, repo, "config.json", Path(f"{tmp}/config.json").read_bytes())
    return repo, state
