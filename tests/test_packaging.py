"""The slim deployment is real: `pip install .[serve]` into a fresh virtual environment (no torch) serves /predict."""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from finetune.export.model_folder import export_model
from finetune.export.onnx_export import export_onnx
from finetune.serving.loadtest import http_json, running_service
from finetune.serving.onnx_predictor import ONNX_FILE, OnnxPredictor
from tests.conftest import ROOT, make_tiny_model, offline_env

TEXTS = ["A moving, beautifully acted film.", "Dull, overlong and badly edited."]


def folder_mb(folder) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


@pytest.mark.index
def test_the_serve_extra_installs_without_torch_and_answers_predict(tmp_path, artifacts):
    model = make_tiny_model(tmp_path / "model")
    export = tmp_path / "export"
    export_model(model, export, 1.0, {"uncertain_threshold": 0.5, "finetune_max_length": 64})
    export_onnx(export, export / ONNX_FILE)

    source = tmp_path / "src"  # the package as a user gets it: pyproject.toml and finetune/, nothing else
    shutil.copytree(ROOT / "finetune", source / "finetune", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", source / "pyproject.toml")
    environment = tmp_path / "serve-env"
    venv.create(environment, with_pip=True)
    python = str(environment / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              f"{source}[serve]"], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-4000:]

    probe = ("import importlib.util, finetune\n"
             "print(finetune.__file__)\n"
             "print(*[m for m in ('torch', 'transformers', 'datasets', 'pandas', 'sklearn')"
             " if importlib.util.find_spec(m)])\n")
    where, missing_heavy = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                                          check=True).stdout.splitlines()
    assert str(environment) in where  # the installed package, not this checkout
    assert missing_heavy == ""  # none of the training stack came along

    env = {**offline_env(), "PATH": f"{environment / 'bin'}:/usr/bin:/bin"}
    with running_service(["--model", str(export)], tmp_path / "serve.log", env=env, python=python,
                         cwd=tmp_path) as url:
        status, answer = http_json(url, "/predict", {"texts": TEXTS})
        backend = http_json(url, "/health")[1]["backend"]
    assert status == 200 and backend == "onnx"
    expected = OnnxPredictor(export).predict(TEXTS)
    assert [p["label"] for p in answer["predictions"]] == [p.label for p in expected]
    assert [p["confidence"] for p in answer["predictions"]] == pytest.approx([p.confidence for p in expected],
                                                                             abs=1e-6)
    artifacts.append(f"`pip install .[serve]` environment: {folder_mb(environment):.0f} MB on disk, against "
                     f"{folder_mb(Path(sys.prefix)):.0f} MB for the full environment ({sys.prefix})")
