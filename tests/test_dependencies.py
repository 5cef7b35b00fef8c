"""dvc.yaml declares every module whose code can change a stage's outputs, and dvc.lock matches the code."""

from __future__ import annotations

import ast
from importlib.metadata import distributions
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

from finetune.core.files import file_digest
from finetune.core.params import CHECK_STAGE, load_params, parse_params, stage_keys
from tests.conftest import ROOT

# Modules a stage may run without listing them in its deps, each with the reason its code cannot change the
# stage's outputs unnoticed. Every other module a stage's script reaches must be among its deps.
EXEMPT = {
    **{str(init.relative_to(ROOT)): "a package's docstring (and the version): no stage output depends on them"
       for init in sorted((ROOT / "finetune").rglob("__init__.py"))},
    "finetune/core/params.py": "every value a stage reads is written in params.yaml (check-params requires each key "
                               "the stage lists, every key of a listed section included), and DVC tracks those "
                               "keys per stage; params.py validates them",
    "finetune/core/stage.py": "logging set-up, log lines (readable, progress) and the one-line error of a failed "
                              "stage: no output bytes",
    "finetune/core/hub.py": "decides only whether the hub can be reached before a download starts: no output bytes",
}


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def script_of(stage: dict) -> Path:
    """stages/x.py for a stage whose command is ``python -m stages.x``."""
    module = stage["cmd"].split("python -m ", 1)[1].split()[0]
    return Path(*module.split(".")).with_suffix(".py")


def direct_imports(path: Path) -> set[Path]:
    """The modules of finetune/ that a file imports anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "finetune" or name.startswith("finetune."):
                parts = name.split(".")
                # importing finetune.a.b runs finetune/__init__.py and finetune/a/__init__.py first
                found |= {Path(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)
                          if (ROOT / Path(*parts[:i], "__init__.py")).is_file()}
                candidate = Path(*parts).with_suffix(".py")
                if (ROOT / candidate).is_file():
                    found.add(candidate)
    return found


def reached_modules(script: Path) -> set[Path]:
    """Every module of finetune/ that running ``script`` can execute, following imports transitively."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for module in direct_imports(todo.pop()) - seen:
            seen.add(module)
            todo.append(module)
    return seen


def undeclared(name: str, stage: dict) -> list[str]:
    exempt = set(EXEMPT) - ({"finetune/core/params.py"} if name == CHECK_STAGE else set())
    deps = {str(Path(d)) for d in stage.get("deps", [])}
    return sorted(str(m) for m in reached_modules(script_of(stage)) if str(m) not in deps | exempt)


@pytest.mark.parametrize("name", list(stages()))
def test_every_module_a_stage_runs_is_among_its_deps(name):
    stage = stages()[name]
    assert str(script_of(stage)) in stage["deps"], f"stage {name!r} does not list its own script"
    missing = undeclared(name, stage)
    assert not missing, (f"stage {name!r} runs {', '.join(missing)} without listing it under deps in dvc.yaml: "
                         "an edit there would not rerun the stage")


@pytest.mark.parametrize("name", list(stages()))
def test_no_stage_lists_a_module_it_never_runs(name):
    """A listed module the stage cannot reach would rerun it for nothing when edited."""
    stage = stages()[name]
    listed = {Path(d) for d in stage.get("deps", []) if d.startswith("finetune/") and d.endswith(".py")}
    unused = sorted(map(str, listed - reached_modules(script_of(stage))))
    assert not unused, f"stage {name!r} lists {', '.join(unused)} but never imports it: drop it from its deps"


def test_the_import_walk_sees_function_level_and_package_imports():
    reached = {str(m) for m in reached_modules(Path("stages/train.py"))}
    assert {"finetune/core/figures.py", "finetune/training/trainer.py", "finetune/training/models.py"} <= reached
    assert "finetune/core/__init__.py" in reached  # `from finetune.core import figures` runs the package first
    assert "finetune/core/contract.py" in {str(m) for m in reached_modules(Path("stages/tokenize.py"))}


def test_package_init_files_hold_no_code():
    """The EXEMPT reason for __init__.py files holds: a docstring (and the version string) only."""
    for init in sorted((ROOT / "finetune").rglob("__init__.py")):
        body = ast.parse(init.read_text()).body
        code = [node for node in body[1:] if not (isinstance(node, ast.Assign) and
                                                   [t.id for t in node.targets] == ["__version__"])]
        assert isinstance(body[0], ast.Expr) and not code, f"{init.relative_to(ROOT)} runs code: move it to a module"


def test_each_stage_lists_the_params_it_reads_and_check_params_runs_first():
    declared = stages()
    check = declared[CHECK_STAGE]
    assert check["params"] == [{"params.yaml": None}]  # every key of params.yaml: a misspelled section fails too
    assert check["outs"] == [{"${paths.source_check}": {"cache": False, "persist": True}}]
    assert "finetune/core/params.py" in check["deps"]
    # download depends on check-params' output, and every other stage on download's outputs, transitively
    assert "${paths.source_check}" in declared["download"]["deps"]
    for name, keys in stage_keys().items():
        assert keys, f"{name} lists no params"
        assert not any(str(dep).startswith("params/") for dep in declared[name]["deps"]), name


@pytest.mark.pipeline  # not in the fast tier: it fails on every code edit until `dvc repro` records it
def test_dvc_lock_matches_the_code_and_params_on_disk():
    """A commit cannot leave dvc.lock behind its code: every code file and params file the lock records has the
    md5 it had when the pipeline last ran, and params.yaml holds the values check-params last validated."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    stale = []
    for name, stage in lock.items():
        for dep in stage.get("deps", []):
            path = ROOT / dep["path"]
            if path.suffix in (".py", ".json") and path.is_file() and file_digest(path, "md5") != dep["md5"]:
                stale.append(f"{name}: {dep['path']}")
    assert not stale, f"dvc.lock is older than {', '.join(stale)}: run `dvc repro` and commit dvc.lock"
    # Compared as typed params: DVC records 2e-05 as the string '2e-05' (YAML 1.1 floats need a dot)
    recorded = parse_params(lock[CHECK_STAGE]["params"]["params.yaml"], "dvc.lock")
    assert recorded == load_params(ROOT / "params.yaml"), \
        "params.yaml changed since the last `dvc repro`: run it and commit dvc.lock"


def test_requirements_pin_every_distribution_the_environment_holds():
    """requirements.txt is the exact lock of `make setup`'s environment: every distribution installed is pinned at
    its installed version, but torch and scattertext (installed apart, first and without dependencies) and the
    installers' own. A package pip resolved on its own (once: opentelemetry-api, for fastapi) would drift."""
    pinned = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                  if line and not line.startswith("#"))
    pinned = {canonicalize_name(name): version for name, version in pinned.items()}
    apart = {"torch", "scattertext", "pip", "setuptools", "wheel", "finetune"}
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    loose = {name: version for name, version in installed.items()
             if name not in apart and pinned.get(name) != version}
    assert not loose, f"installed but not pinned at that version in requirements.txt: {loose}"
