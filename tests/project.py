"""A copy of the project's pipeline for real `dvc` runs, used by the tests and by the bench."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a copy of the project needs to run the pipeline: no caches, no outputs (reports/seeds.json is an input of the
# report, in git, rewritten by `python -m finetune seeds`).
PROJECT_FILES = ["dvc.yaml", "params.yaml", "finetune", "stages", ".dvc/config", ".dvc/plots", ".dvcignore",
                 ".gitignore", "reports/seeds.json"]


def copy_project(folder: Path) -> Path:
    """The project's pipeline, library and DVC config copied into ``folder`` (no caches, no outputs)."""
    for name in PROJECT_FILES:
        source, target = ROOT / name, folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return folder
