"""The params reference (docs/params.md), written from the typed schema and dvc.yaml, so that it cannot drift.

``python -m finetune params-reference`` writes it; ``--check`` fails when the file differs
from what the schema says (a test runs the same check). Every key gets its type, default,
allowed values, meaning (the field's description in params.py) and the stages that read it
(their ``params:`` lists in dvc.yaml).
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from finetune.core.params import CHECK_STAGE, PIPELINE_FILE, Params, stage_keys

REFERENCE_FILE = "docs/params.md"
# Keys no stage lists, and who reads them instead.
OTHER_READERS = {"search": "`python -m finetune search`", "paths.search": "`python -m finetune search`",
                 "paths.search_plots": "`python -m finetune search`",
                 "paths.seeds": "`python -m finetune seeds` writes it", "paths.source_check": "check-params writes it"}

INTRO = """# params.yaml, key by key

Every path and hyperparameter lives in `params.yaml`. Edit it, then `dvc repro`; or try a value
without editing: `dvc exp run -S train.learning_rate=5e-5`. `dvc status` names the stages an edit
concerns, and `dvc params diff` shows what changed since the last commit.

- **What reruns**: each stage lists the keys it reads under `params:` in `dvc.yaml` (the "read by"
  column below), and its code refuses any other key, so DVC reruns exactly the stages a key
  concerns, whether you run `dvc repro`, `dvc repro -s STAGE`, `dvc exp run` or the queue; a later
  stage reruns only when an input's bytes change.
- **Checked first**: the check-params stage validates the whole file before any stage's outputs are
  deleted: an unknown key (with the closest known key suggested), a wrong type or an out-of-range
  value, a `data.source` that is not there or lacks the columns named, a `model.name` the hub would
  be needed for while offline. Each fails in one line that names the key and the fix:

  ```
  $ dvc repro      # with evaluate.uncertain_treshold: 0.5 in params.yaml
  error: params.yaml is invalid: evaluate.uncertain_treshold: unknown key (did you mean evaluate.uncertain_threshold?)
  ```
- **Every key a stage reads is written in the file**, every key of a section it reads included:
  DVC tracks the file, so a value left to a default would change unseen. A file that lacks one
  (say, one written before the key existed) fails check-params with the keys to add and their
  defaults, which keep the behaviour of a file without them.
- A misspelled `paths.*` key in `dvc.yaml` (`${paths.x}`) is caught by DVC's own parser
  (`Could not find 'paths.x'`), with nothing deleted.

This page is written by `python -m finetune params-reference` from the typed schema
(`finetune/core/params.py`) and `dvc.yaml`; a test fails when it is out of date.
"""


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: int, float, list of str, str or null, one of a | b ..."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{arg}`" for arg in args)
    if origin in (Union, types.UnionType):
        named = [type_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "range"  # search.space's values
    return getattr(annotation, "__name__", str(annotation))


def allowed(field: FieldInfo) -> str:
    """The constraints a value must meet, as a short formula (Literal choices are in the type)."""
    bounds = {type(item): item for item in field.metadata}
    parts = []
    if Gt in bounds or Ge in bounds:
        parts.append(f"> {bounds[Gt].gt}" if Gt in bounds else f">= {bounds[Ge].ge}")
    if Lt in bounds or Le in bounds:
        parts.append(f"< {bounds[Lt].lt}" if Lt in bounds else f"<= {bounds[Le].le}")
    if MinLen in bounds:
        parts.append(f"at least {bounds[MinLen].min_length} long")
    if MaxLen in bounds:
        parts.append(f"at most {bounds[MaxLen].max_length} long")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, dict):
        return "(see params.yaml)"
    return f"`{json.dumps(value)}`"


def readers(key: str, listed: dict[str, tuple[str, ...]]) -> str:
    """The stages whose params lists cover ``key`` (the key itself, or a section holding it)."""
    stages = [name for name, keys in listed.items() if any(key == k or key.startswith(k + ".") for k in keys)]
    other = next((who for prefix, who in OTHER_READERS.items() if key == prefix or key.startswith(prefix + ".")), "")
    return ", ".join([*stages, *([other] if other else [])]) or "-"


def is_section(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def rows(model: type[BaseModel], prefix: str, listed: dict[str, tuple[str, ...]]) -> list[str]:
    """A table row per key of ``model``, the keys of a nested section (train.lora) included."""
    lines = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if is_section(field):  # a section inside a section (train.lora): its keys follow, dotted
            lines.extend(rows(field.annotation, f"{key}.", listed))
            continue
        cells = [f"`{key}`", type_name(field.annotation), default_text(field), allowed(field) or "-",
                 readers(key, listed), (field.description or "").replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def reference(pipeline: str | Path = PIPELINE_FILE) -> str:
    """The whole page: the introduction, then one table per section of params.yaml."""
    listed = stage_keys(pipeline)
    header = ["| key | type | default | allowed | read by | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    top = [row for row in rows(Params, "", listed) if "." not in row.split("`")[1]]  # seed; the sections follow
    parts = [INTRO, "## Top level\n", *header, *top]
    for name, field in Params.model_fields.items():
        if not is_section(field):
            continue
        section = field.annotation
        parts += ["", f"## {name}\n", (section.__doc__ or "").strip() + "\n", *header, *rows(section, f"{name}.",
                                                                                          listed)]
    parts += ["", f"Every key is also read by {CHECK_STAGE}, which validates the whole file before any other stage "
              "runs.", ""]
    return "\n".join(parts)


def write_reference(path: str | Path = REFERENCE_FILE, pipeline: str | Path = PIPELINE_FILE) -> bool:
    """Write the reference; True when the file changed."""
    path, text = Path(path), reference(pipeline)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True
