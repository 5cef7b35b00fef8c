"""The package is laid out like the pipeline, and no import runs up its layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Lowest first. A module may import from its own layer and the layers before it, never from a later one.
# serving sits below export: the export stage checks its ONNX model through serving's two backends.
LAYERS = ("core", "data", "training", "evaluation", "serving", "export", "experiments")
ENTRY_POINTS = {"finetune/__init__.py", "finetune/__main__.py", "finetune/cli.py"}  # above every layer


def imported_layers(path: Path) -> set[str]:
    """The subpackages of finetune/ a module imports anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        found |= {name.split(".")[1] for name in names if name.startswith("finetune.")}
    return found


def modules() -> list[Path]:
    return sorted(p for p in (ROOT / "finetune").rglob("*.py") if str(p.relative_to(ROOT)) not in ENTRY_POINTS)


def test_every_module_lives_in_a_layer():
    stray = [str(p.relative_to(ROOT)) for p in modules() if p.relative_to(ROOT).parts[1] not in LAYERS]
    assert not stray, f"{stray} live outside the layers {LAYERS}: move them into one"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT / "finetune")))
def test_no_import_runs_up_the_layers(path):
    layer = path.relative_to(ROOT).parts[1]
    allowed = set(LAYERS[:LAYERS.index(layer) + 1])
    above = sorted(imported_layers(path) - allowed)
    assert not above, f"{path.relative_to(ROOT)} ({layer}) imports from {above}, a later layer"


def test_the_walk_sees_function_level_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from finetune.serving.backends import load_predictor\n")
    assert imported_layers(module) == {"serving"}
