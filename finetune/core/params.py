"""Typed, validated access to ``params.yaml``, and the keys each stage reads.

Every key is checked when the file is read: an unknown key (with the closest known key
suggested), a wrong type or an out-of-range value fails at once with the key's dotted
name. Which keys a stage reads is declared once, in ``dvc.yaml``: each stage lists them
under ``params:``, so DVC reruns a stage when one of its keys changes, however the stage is
run (``dvc repro``, ``dvc repro -s``, ``dvc exp run``, the queue). A stage reads params.yaml
through :func:`stage_params`, which refuses any key its ``params:`` list does not name. The
first stage, check-params, validates the whole file (and that every listed key is in it)
before any other stage's outputs are deleted.
"""

from __future__ import annotations

import codecs
import difflib
import json
import re
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finetune.core.errors import UserError

PARAMS_FILE = "params.yaml"
PIPELINE_FILE = "dvc.yaml"  # its stages' `params:` lists name the keys each stage reads
CHECK_STAGE = "check-params"  # the stage that validates every key (its `params:` entry is the whole file)
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # train.precision: the training's arithmetic


class ParamsError(UserError, ValueError):
    """params.yaml (or a stage's params list) is invalid; the message says how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(_Section):
    source_check: str = "reports/source.json"
    raw: str = "data/raw"
    data_report: str = "reports/data.json"
    splits: str = "data/splits"
    split_report: str = "reports/split.json"
    tokenized: str = "data/tokenized"
    model: str = "models/model"
    checkpoints: str = ".checkpoints"
    training_log: str = "reports/training"
    learning_curves: str = "reports/training/learning_curves.png"
    metrics: str = "reports/metrics.json"
    evaluation: str = "reports/evaluation.json"
    predictions: str = "reports/predictions.csv"
    plots: str = "reports/plots"
    figures: str = "reports/figures"
    errors: str = "reports/errors.csv"
    error_summary: str = "reports/error_summary.json"
    slices: str = "reports/slices.json"
    baselines: str = "reports/baselines.json"
    baseline_predictions: str = "reports/baseline_predictions.csv"
    significance: str = "reports/significance.json"
    label_issues: str = "reports/label_issues.csv"
    seeds: str = "reports/seeds.json"  # written by `python -m finetune seeds`, read by report
    search: str = "reports/search.json"  # written by `python -m finetune search`
    search_plots: str = "reports/search"
    report: str = "reports/report.md"
    report_html: str = "reports/report.html"
    export: str = "models/export"
    export_metrics: str = "reports/export.json"


class DataParams(_Section):
    source: str = Field("rotten_tomatoes", min_length=1)
    sha256: str | None = None
    revision: str | None = Field(None, min_length=1)  # hub datasets: the branch, tag or commit to read
    text_columns: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    label_column: str = Field("label", min_length=1)
    # Multi-label data: label names joined in label_column ("joy,love"), or one 0/1 column per label.
    label_separator: str | None = Field(None, min_length=1)
    label_columns: list[str] | None = Field(None, min_length=2)
    allow_empty_labels: bool = False  # multi-label: a text may have no label at all
    encoding: str = "utf-8"
    labels: list[str | int] | None = None
    max_samples: int | None = Field(None, ge=1)
    drop_duplicates: bool = True

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be a sha256 hex digest of 64 characters, or null")
        return value.lower() if value else value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r} (for example utf-8, latin-1)") from None
        return value

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: list[str | int] | None) -> list[str | int] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("needs at least two label values")
            if len({str(v) for v in value}) != len(value):
                raise ValueError("label values must be distinct")
        return value

    @field_validator("label_columns")
    @classmethod
    def _distinct_columns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("label columns must be distinct")
        return value

    @model_validator(mode="after")
    def _one_label_layout(self) -> DataParams:
        if self.label_separator is not None and self.label_columns is not None:
            raise ValueError("data.label_separator splits one label column, data.label_columns names one 0/1 "
                             "column per label: set one of them, not both")
        if self.label_columns is not None and self.labels is not None:
            raise ValueError("data.label_columns already names the labels in order: set data.labels to null")
        return self


class SplitParams(_Section):
    val_size: float = Field(0.1, gt=0, lt=1)
    test_size: float = Field(0.2, gt=0, lt=1)


class ModelParams(_Section):
    name: str = Field("minilm", min_length=1)


class TokenizeParams(_Section):
    max_length: int = Field(128, ge=8, le=8192)
    # The strategies the exported model's contract reads back (contract.TRUNCATIONS; a test keeps them equal).
    # Not imported from there: every stage reads params.py, and none but those that truncate should depend on
    # contract.py.
    truncation: Literal["head", "tail", "head+tail"] = "head"


class TrainParams(_Section):
    # head initialisation, shuffling and dropout; the top-level seed draws the data (sampling, splits), so that
    # several training seeds are scored on one test set
    seed: int = Field(42, ge=0)
    learning_rate: float = Field(2e-5, gt=0, le=1)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(3, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    early_stopping_patience: int = Field(2, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    num_processes: int = Field(1, ge=1, le=1024)  # > 1: data-parallel (DDP) under torchrun, one per GPU
    compile: bool = False  # torch.compile the model (opt-in: compiling costs time up front)
    # balanced: each class (multi-label: each label's positives) weighs inversely to its frequency in train
    class_weights: Literal["none", "balanced"] = "none"
    # auto: on a GPU bf16 autocast where it computes in bfloat16, else fp16; fp32 on a CPU
    precision: Precision = "auto"


class EvaluateParams(_Section):
    uncertain_threshold: float = Field(0.8, ge=0, le=1)
    # multi-label: a label whose log-odds lie within this of its threshold's makes the text UNCERTAIN
    uncertain_band: float = Field(0.5, ge=0, le=10)
    # single-label, two classes: argmax answers the most probable class; tuned answers the second (positive) class
    # from a probability threshold tuned on validation for its F1, exported with the model
    decision_threshold: Literal["argmax", "tuned"] = "argmax"
    batch_size: int = Field(64, ge=1)


class SearchRange(_Section):
    """One searched key: numbers between low and high (log: sampled on a log scale), or one of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[int | float | str | bool] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high (and log), not both")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("give low < high, or a list of choices")
        elif self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


def default_space() -> dict[str, SearchRange]:
    return {"train.learning_rate": SearchRange(low=1e-5, high=1e-4, log=True),
            "train.epochs": SearchRange(low=2, high=5),
            "train.batch_size": SearchRange(choices=[16, 32]),
            "train.weight_decay": SearchRange(low=0.0, high=0.1)}


class SearchParams(_Section):
    # the kept epoch's validation figure (reports/training/metrics.json, eval.<metric>) a trial is scored by
    metric: str = Field("f1_macro", min_length=1)
    direction: Literal["maximize", "minimize"] = "maximize"
    storage: str = Field("sqlite:///.search/optuna.db", min_length=1)  # Optuna's storage URL (a database server
    study: str = Field("search", min_length=1)                         # for several machines on one study)
    trial_timeout_s: float | None = Field(None, gt=0)  # a trial running longer is stopped and recorded as failed
    space: dict[str, SearchRange] = Field(default_factory=default_space, min_length=1)

    @field_validator("space")
    @classmethod
    def _known_keys(cls, space: dict[str, SearchRange]) -> dict[str, SearchRange]:
        sections = {"data": DataParams, "split": SplitParams, "tokenize": TokenizeParams, "train": TrainParams,
                    "evaluate": EvaluateParams}
        searchable = {f"{name}.{key}" for name, section in sections.items() for key in section.model_fields}
        unknown = sorted(set(space) - searchable)
        if unknown:
            raise ValueError(f"{unknown} are no params keys that training or evaluation read; search keys like "
                             "train.learning_rate or tokenize.max_length")
        return space


class LabelIssuesParams(_Section):
    folds: int = Field(5, ge=2)  # cross-validation folds of the out-of-fold probabilities


class ExportParams(_Section):
    onnx: bool = True  # also write model.onnx, checked against PyTorch's logits
    int8: bool = True  # also write model.int8.onnx (dynamic int8 quantisation), scored beside fp32
    parity_texts: int = Field(64, ge=1)  # test texts the ONNX parity check runs
    parity_tolerance: float = Field(1e-4, gt=0)  # largest allowed |ONNX - PyTorch| logit difference

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> ExportParams:
        if self.int8 and not self.onnx:
            raise ValueError("export.int8 quantises the ONNX model: set export.onnx to true, or export.int8 to false")
        return self


class Params(_Section):
    seed: int = Field(42, ge=0)
    paths: Paths = Field(default_factory=Paths)
    data: DataParams = Field(default_factory=DataParams)
    split: SplitParams = Field(default_factory=SplitParams)
    model: ModelParams = Field(default_factory=ModelParams)
    tokenize: TokenizeParams = Field(default_factory=TokenizeParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    export: ExportParams = Field(default_factory=ExportParams)
    label_issues: LabelIssuesParams = Field(default_factory=LabelIssuesParams)
    search: SearchParams = Field(default_factory=SearchParams)


QUEUED_COPY = (".dvc", "tmp", "exps")  # where DVC runs a queued experiment: a temporary copy of the repository


def workspace_root(cwd: Path) -> Path | None:
    """The user's repository when ``cwd`` is inside a queued experiment's temporary copy of it, else None."""
    parts = cwd.parts
    for i in range(len(parts) - len(QUEUED_COPY) + 1):
        if parts[i:i + len(QUEUED_COPY)] == QUEUED_COPY:
            return Path(*parts[:i])
    return None


def local_path(value: str) -> Path:
    """A params value naming a local file or folder. A relative path is relative to the repository; in a queued
    experiment's temporary copy, a path that is not in the copy (git-ignored data, files outside the
    repository) is found relative to the user's repository instead."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    root = workspace_root(Path.cwd().resolve())
    if root is not None and (root / path).exists():
        return root / path
    return path


def missing_path_hint() -> str:
    """Extra advice for a local path that is not there, when running as a queued experiment."""
    if workspace_root(Path.cwd().resolve()) is None:
        return ""
    return (". This runs as a queued experiment in a temporary copy of the repository, where only files "
            "tracked by git or DVC exist: give paths outside the repository as absolute paths")


def closest_key(loc: tuple[Any, ...]) -> str | None:
    """The known key nearest to the unknown key at ``loc`` (same section), for a "did you mean" hint."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        annotation = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    match = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.75)
    return ".".join([*map(str, loc[:-1]), match[0]]) if match else None


def parse_params(raw: Any, source: str = PARAMS_FILE) -> Params:
    """Validate a parsed YAML mapping; errors name each offending key (and the closest known key)."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = []
        for problem in err.errors():
            key = ".".join(str(part) for part in problem["loc"])
            if problem["type"] == "extra_forbidden":
                suggestion = closest_key(problem["loc"])
                hint = f"did you mean {suggestion}?" if suggestion else "check its spelling against the README"
                problems.append(f"{key}: unknown key ({hint})")
            else:
                problems.append(f"{key}: {problem['msg']} (got {problem.get('input')!r})")
        raise ParamsError(f"{source} is invalid: " + "; ".join(problems)) from None


def read_raw(path: str | Path = PARAMS_FILE) -> Any:
    """The params file as parsed YAML, not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the repository root, where params.yaml lives")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate the whole params file."""
    return parse_params(read_raw(path), str(path))


def read_pipeline(path: str | Path = PIPELINE_FILE) -> dict[str, Any]:
    """The stages of ``dvc.yaml`` as written (``${...}`` left as is)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the repository root, where dvc.yaml lives")
    return yaml.safe_load(path.read_text(encoding="utf-8")).get("stages") or {}


def stage_keys(path: str | Path = PIPELINE_FILE) -> dict[str, tuple[str, ...]]:
    """Per stage (check-params aside), the params keys or sections its ``params:`` list in dvc.yaml names."""
    keys = {}
    for name, stage in read_pipeline(path).items():
        if name == CHECK_STAGE:
            continue
        listed = stage.get("params") or []
        if not all(isinstance(key, str) for key in listed):
            raise ParamsError(f"{path}: stage {name!r} lists params as {listed!r}; list plain keys of params.yaml "
                              "(e.g. train, model.name), which the stage reads from params.yaml")
        keys[name] = tuple(listed)
    return keys


def key_value(values: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of nested dicts; a ParamsError for a key no section has."""
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"dvc.yaml lists the params key {key!r}, which params.yaml cannot have: fix the "
                              "stage's params list")
        node = node[part]
    return node


def has_key(raw: Any, key: str) -> bool:
    """Whether a parsed params file holds the dotted key (null counts: it is written)."""
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def leaf_keys(values: Any, prefix: str) -> list[str]:
    """The dotted keys of every leaf under ``prefix`` in nested dicts of values (the key itself for a leaf)."""
    if not isinstance(values, dict) or prefix == "search.space":  # search.space's keys are dotted params keys
        return [prefix]
    return [leaf for name, value in values.items() for leaf in leaf_keys(value, f"{prefix}.{name}")]


def check_listed_keys(raw: dict[str, Any], keys: dict[str, tuple[str, ...]], source: str = PARAMS_FILE) -> None:
    """Every key a stage reads must be written in the params file, every key of a listed section included: DVC
    tracks the file, not these defaults, so a value left to a default would change unseen when the default does.
    One line names the missing keys, the stages that read them and the value to add (the default)."""
    defaults = Params().model_dump(mode="json")
    missing: dict[str, set[str]] = {}
    for stage, listed in keys.items():
        for key in listed:
            for leaf in leaf_keys(key_value(defaults, key), key):
                if not has_key(raw, leaf):
                    missing.setdefault(leaf, set()).add(stage)
    if missing:
        shown = "; ".join(f"{key}: {json.dumps(key_value(defaults, key))} (read by {', '.join(sorted(stages))})"
                          for key, stages in sorted(missing.items()))
        raise ParamsError(f"{source} lacks keys that stages read, and DVC tracks only what the file holds: add "
                          f"them with their defaults, which keep the behaviour of a file without them: {shown}")


class _StageView:
    """Read-only view of a params object that allows only the listed keys."""

    def __init__(self, obj: BaseModel, allowed: set[str], stage: str, prefix: str = "") -> None:
        self._obj, self._allowed, self._stage, self._prefix = obj, allowed, stage, prefix

    def __getattr__(self, name: str) -> Any:
        key = self._prefix + name
        value = getattr(self._obj, name)
        parts = key.split(".")
        if any(".".join(parts[:i]) in self._allowed for i in range(1, len(parts) + 1)):
            return value
        if any(allowed.startswith(key + ".") for allowed in self._allowed):
            return _StageView(value, self._allowed, self._stage, key + ".")
        raise ParamsError(
            f"stage {self._stage!r} reads params key {key!r}, which its params list in dvc.yaml does not name: "
            "add it there, so that DVC reruns the stage when it changes"
        )


def stage_params(stage: str, params_file: str | Path = PARAMS_FILE, pipeline: str | Path = PIPELINE_FILE) -> Params:
    """The whole of params.yaml, validated, seen through the keys the stage lists in dvc.yaml: it is read as it is
    on disk whenever the stage runs."""
    keys = stage_keys(pipeline)
    if stage not in keys:
        raise ParamsError(f"{pipeline} has no stage {stage!r} (it has {', '.join(keys)})")
    return cast(Params, _StageView(load_params(params_file), set(keys[stage]), stage))
