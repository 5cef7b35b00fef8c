"""dvc.yaml declares every module whose code can change a stage's outputs, and dvc.lock matches the code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from finetune.files import file_digest
from finetune.params import STAGE_KEYS, STAGE_PARAMS_DIR, load_params, parse_params, stage_file
from tests.conftest import ROOT

CHECK_STAGE = "check-params"

# Modules a stage may run without listing them in its deps, each with the reason its code cannot change the
# stage's outputs unnoticed. Every other module a stage's script reaches must be among its deps.
EXEMPT = {
    "finetune/__init__.py": "the package's docstring and version: no stage output depends on them",
    "finetune/params.py": "each stage depends on params/<stage>.json, which holds its resolved values (defaults "
                          "included) and which check-params, listing params.py, rewrites when params.py changes",
    "finetune/stage.py": "logging set-up and the one-line error of a failed stage: no output bytes",
    "finetune/hub.py": "decides only whether the hub can be reached before a download starts: no output bytes",
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
                found.add(Path("finetune/__init__.py"))
                candidate = Path(*name.split(".")).with_suffix(".py")
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
    exempt = set(EXEMPT) - ({"finetune/params.py"} if name == CHECK_STAGE else set())
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
    assert {"finetune/figures.py", "finetune/training.py", "finetune/models.py"} <= reached  # `from finetune import`
    assert "finetune/contract.py" in {str(m) for m in reached_modules(Path("stages/tokenize.py"))}


def test_each_stage_depends_on_its_own_params_file_written_by_check_params():
    declared = stages()
    assert declared[CHECK_STAGE]["outs"] == [{STAGE_PARAMS_DIR: {"cache": False, "persist": True}}]
    assert declared[CHECK_STAGE]["params"] == [{"params.yaml": None}]  # every key of params.yaml
    assert "finetune/params.py" in declared[CHECK_STAGE]["deps"]
    assert set(STAGE_KEYS) == set(declared) - {CHECK_STAGE}
    for name in STAGE_KEYS:
        assert str(stage_file(name)) in declared[name]["deps"], name
        assert "params" not in declared[name], f"{name} reads params.yaml only through its params file"


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
