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
    """Where each stage writes; dvc.yaml names the same paths as ``${paths.<key>}``."""

    source_check: str = Field("reports/source.json", description="check-params: the data files whose header it "
                              "checked, with their columns (download depends on it, so check-params runs first)")
    raw: str = Field("data/raw", description="download: the Arrow DatasetDict of text and label")
    data_report: str = Field("reports/data.json", description="download: rows per split, what cleaning dropped")
    splits: str = Field("data/splits", description="split: train, validation and test")
    split_report: str = Field("reports/split.json", description="split: sizes, label counts, texts shared between "
                              "splits")
    tokenized: str = Field("data/tokenized", description="tokenize: input_ids, attention_mask, label")
    model: str = Field("models/model", description="train: the best model and its tokenizer")
    adapter: str = Field("models/adapter", description="train: the LoRA adapter and head alone (train.adapter: "
                         "lora), or a note that there is none")
    checkpoints: str = Field(".checkpoints", description="train: per-epoch checkpoints (git-ignored, no DVC output), "
                             "kept until training succeeds so an interrupted run resumes")
    training_log: str = Field("reports/training", description="train: dvclive learning curves and the summary")
    learning_curves: str = Field("reports/training/learning_curves.png", description="train: the learning curves "
                                 "as PNG")
    metrics: str = Field("reports/metrics.json", description="evaluate: the headline test metrics "
                         "(`dvc metrics show`)")
    evaluation: str = Field("reports/evaluation.json", description="evaluate: every test figure (per class, "
                            "confusions, calibration)")
    predictions: str = Field("reports/predictions.csv", description="evaluate: each test text's prediction")
    plots: str = Field("reports/plots", description="evaluate: the data of DVC's plots (small, aggregated)")
    figures: str = Field("reports/figures", description="evaluate: the same plots as PNG")
    errors: str = Field("reports/errors.csv", description="error-analysis: every wrong test prediction")
    error_summary: str = Field("reports/error_summary.json", description="error-analysis: counts and the worst "
                               "confusions")
    slices: str = Field("reports/slices.json", description="error-analysis: slices with their accuracy and worst "
                        "examples")
    explanations: str = Field("reports/explanations.json", description="error-analysis: how faithful the "
                              "explanations are (ERASER comprehensiveness), per method")
    baselines: str = Field("reports/baselines.json", description="baseline: TF-IDF and frozen-encoder baselines")
    baseline_predictions: str = Field("reports/baseline_predictions.csv", description="baseline: each baseline's "
                                      "answer per test text")
    significance: str = Field("reports/significance.json", description="report: paired bootstrap of the "
                              "fine-tuned model against each baseline")
    label_issues: str = Field("reports/label_issues.csv", description="label-issues: likely mislabeled train "
                              "texts, worst first")
    seeds: str = Field("reports/seeds.json", description="`python -m finetune seeds`: test metrics over training "
                       "seeds (the report reads it)")
    search: str = Field("reports/search.json", description="`python -m finetune search`: every trial and the best")
    search_plots: str = Field("reports/search", description="`python -m finetune search`: history.png, "
                              "importances.png")
    report: str = Field("reports/report.md", description="report: the written report")
    report_html: str = Field("reports/report.html", description="report: the same as HTML, pictures embedded")
    export: str = Field("models/export", description="export: the self-contained model folder (with ONNX)")
    export_metrics: str = Field("reports/export.json", description="export: ONNX parity, int8 accuracy")


class DataParams(_Section):
    """What to read and how: the source, its columns and its labels."""

    source: str = Field("rotten_tomatoes", min_length=1, description="rotten_tomatoes (packaged), imdb, a hub "
                        "dataset id, an http(s) URL, a local file, folder, archive or glob, or s3://bucket/prefix")
    sha256: str | None = Field(None, description="a URL source's checksum, verified after the download")
    revision: str | None = Field(None, min_length=1, description="a hub dataset's branch, tag or commit to read "
                                 "(reports/data.json records the commit read)")
    text_columns: list[str] = Field(default_factory=lambda: ["text"], min_length=1, description="the text column; "
                                    "several are joined into one text, a line apart")
    label_column: str = Field("label", min_length=1, description="the label column")
    label_separator: str | None = Field(None, min_length=1, description="multi-label: the character joining label "
                                        "names in label_column, e.g. \",\" for \"joy,love\"")
    label_columns: list[str] | None = Field(None, min_length=2, description="multi-label: one 0/1 (or true/false) "
                                            "column per label, e.g. [toxic, insult]")
    allow_empty_labels: bool = Field(False, description="multi-label: a text may have no label at all")
    encoding: str = Field("utf-8", description="the text encoding of the files, e.g. latin-1 for older files")
    labels: list[str | int] | None = Field(None, description="the label values in the order of their ids; null: "
                                           "numbers numerically, anything else alphabetically")
    max_samples: int | None = Field(None, ge=1, description="rows kept per split (stratified), for a quick try; "
                                    "null: all")
    drop_duplicates: bool = Field(True, description="drop repeated texts within a split (the first is kept)")

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
    """The validation (and, when the source has none, test) split drawn from train, stratified by label."""

    val_size: float = Field(0.1, gt=0, lt=1, description="share of train held out for validation")
    test_size: float = Field(0.2, gt=0, lt=1, description="share of the data held out for test, used only when "
                             "the source has no test split")


class ModelParams(_Section):
    """The pretrained model to fine-tune."""

    name: str = Field("minilm", min_length=1, description="minilm (the packaged MiniLM-L6), a hub id such as "
                      "distilbert-base-uncased, or a local folder with safetensors weights and a fast tokenizer")


class TokenizeParams(_Section):
    """The token budget of a text and what a longer one keeps."""

    max_length: int = Field(128, ge=8, le=8192, description="tokens per text, special tokens included")
    # The strategies the exported model's contract reads back (contract.TRUNCATIONS; a test keeps them equal).
    # Not imported from there: every stage reads params.py, and none but those that truncate should depend on
    # contract.py.
    truncation: Literal["head", "tail", "head+tail", "windows"] = Field(
        "head", description="what a longer text keeps: its start, its end, a quarter from the start and the rest "
        "from the end, or all of it in overlapping windows (one answer per text from their aggregated logits)")
    stride: int = Field(32, ge=0, description="windows: tokens two neighbouring windows share (below max_length "
                        "less the special tokens); the export keeps it for prediction in windows")
    max_windows: int = Field(8, ge=1, description="windows: the most windows read per text; a longer text keeps "
                             "this many, evenly spread, its first and last always among them (1: the head alone)")

    def settings(self) -> dict[str, Any]:
        """The settings as the report and the model card list them: the window keys only with truncation
        windows."""
        return self.model_dump(exclude=None if self.truncation == "windows" else {"stride", "max_windows"})


class LoraParams(_Section):
    """LoRA adapters (train.adapter: lora): a low-rank update of each adapted layer; the head trains in full."""

    rank: int = Field(8, ge=1, le=4096, description="the rank of each layer's low-rank update")
    alpha: float = Field(16.0, gt=0, description="the update's scale is alpha / rank")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: Literal["auto", "all-linear"] | list[str] = Field(
        "auto", description="the layers adapted: auto (the attention's query and value projections, by model "
        "type), all-linear, or a list of layer names")

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("name at least one layer, or use auto or all-linear")
        return value


class TrainParams(_Section):
    """Fine-tuning with the Hugging Face Trainer: the recipe's hyperparameters and the hardware settings."""

    seed: int = Field(42, ge=0, description="the new head's initial weights, shuffling and dropout (the top-level "
                      "seed draws the data, so several training seeds share one test set)")
    learning_rate: float = Field(2e-5, gt=0, le=1, description="AdamW's peak learning rate (linear decay)")
    batch_size: int = Field(16, ge=1, description="training texts per step (per process)")
    epochs: int = Field(3, ge=1, description="the most epochs to train; the epoch with the lowest validation loss "
                        "is kept")
    weight_decay: float = Field(0.01, ge=0, description="AdamW's weight decay")
    early_stopping_patience: int = Field(2, ge=1, description="epochs without a lower validation loss before "
                                         "training stops")
    eval_batch_size: int = Field(64, ge=1, description="texts per step of the per-epoch validation")
    num_processes: int = Field(1, ge=1, le=1024, description="more than 1: data-parallel training under torchrun, "
                               "one process per GPU")
    compile: bool = Field(False, description="torch.compile the model (costs compile time up front)")
    class_weights: Literal["none", "balanced"] = Field("none", description="balanced: weigh each class (each "
                                                       "label's positives, for label sets) by its rarity in train")
    precision: Precision = Field("auto", description="auto: bf16 autocast on a GPU that computes in bfloat16, else "
                                 "fp16, and fp32 on a CPU; fp32, bf16 or fp16 (GPU only) force one")
    adapter: Literal["none", "lora"] = Field("none", description="none: fine-tune every weight; lora: train "
                                             "low-rank adapters (train.lora) and the head, merged into the model "
                                             "when training ends (the adapter alone is kept in paths.adapter)")
    lora: LoraParams = Field(default_factory=LoraParams)
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass instead "
                                         "of keeping them: less memory for a bigger backbone, more time")
    gradient_accumulation_steps: int = Field(1, ge=1, description="steps whose gradients add up before each "
                                             "update: the effective batch is batch_size x this x num_processes")

    def settings(self) -> dict[str, Any]:
        """The settings as the report and the model card list them: flat (``lora.rank``), LoRA's only with
        train.adapter lora."""
        values = self.model_dump(exclude={"lora"})
        if self.adapter == "lora":
            values |= {f"lora.{key}": value for key, value in self.lora.model_dump().items()}
        return values


class EvaluateParams(_Section):
    """Scoring on the test split, and the answers the exported model gives."""

    uncertain_threshold: float = Field(0.8, ge=0, le=1, description="below this confidence (calibrated) the model "
                                       "answers UNCERTAIN; saved in the export")
    uncertain_band: float = Field(0.5, ge=0, le=10, description="multi-label: a label whose log-odds lie this close "
                                  "to its threshold's makes the text UNCERTAIN")
    decision_threshold: Literal["argmax", "tuned"] = Field("argmax", description="two classes: argmax answers the "
                                                           "most probable class; tuned answers the second class "
                                                           "from a probability threshold tuned on validation")
    batch_size: int = Field(64, ge=1, description="texts per forward pass of evaluate and of the frozen-encoder "
                            "baseline")
    window_aggregation: Literal["mean", "max"] = Field("mean", description="tokenize.truncation windows: a "
                                                       "text's logits are the mean or the maximum of its windows' "
                                                       "(per class or label), before any probability")
    calibration_min_texts: int = Field(100, ge=1, description="the fewest validation texts the calibration "
                                       "temperature is fitted on; below it T stays 1 (the model's own confidences) "
                                       "with a warning")


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
    """`python -m finetune search`: Optuna over DVC experiments; no stage reads this section."""

    metric: str = Field("f1_macro", min_length=1, description="the kept epoch's validation figure that scores a "
                        "trial (reports/training/metrics.json; the test split never chooses)")
    direction: Literal["maximize", "minimize"] = Field("maximize", description="whether a larger metric is better")
    storage: str = Field("sqlite:///.search/optuna.db", min_length=1, description="Optuna's storage URL; a "
                         "database server lets several machines share a study")
    study: str = Field("search", min_length=1, description="the study's name; its trials are the experiments "
                       "search-0, search-1, ...")
    trial_timeout_s: float | None = Field(None, gt=0, description="a trial running longer is stopped and recorded "
                                          "as failed; null: no limit")
    heartbeat_s: float = Field(60, gt=0, description="a running trial's heartbeat in the storage; one silent for "
                               "twice as long is recorded as failed (its worker died)")
    git_remote: str | None = Field(None, min_length=1, description="git remote each finished trial's experiment is "
                                   "pushed to (dvc exp push), its outputs to the DVC remote, so that `search "
                                   "--collect` on any clone pulls them; null: trials stay in the clone that ran them")
    dvc_remote: str | None = Field(None, min_length=1, description="DVC remote for the trials' outputs; null: the "
                                   "repository's default remote")
    space: dict[str, SearchRange] = Field(default_factory=default_space, min_length=1, description="the searched "
                                          "keys: {low, high, log} for numbers (log: on a log scale) or {choices}")

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
    """The label-issues stage: cleanlab on out-of-fold probabilities of a cheap model."""

    folds: int = Field(5, ge=2, description="cross-validation folds of the TF-IDF model whose out-of-fold "
                       "probabilities cleanlab reads")


class ExplainParams(_Section):
    """Why the model answered (error-analysis): the words that drove the most confident mistakes, and how
    faithful the explanations are."""

    method: Literal["occlusion", "integrated-gradients"] = Field("occlusion", description="how errors.csv's "
                                                                 "driving words are weighed: occlusion (the method "
                                                                 "of every backend) or integrated-gradients (captum)")
    mistakes: int = Field(20, ge=0, description="the most confident mistakes whose driving words errors.csv and the "
                          "report give")
    texts: int = Field(200, ge=0, description="test texts the faithfulness figure is measured on (the first ones; "
                       "0: none)")
    top_share: float = Field(0.2, gt=0, lt=1, description="share of a text's words removed, by weight or at random "
                             "(ERASER comprehensiveness)")
    random_draws: int = Field(5, ge=1, description="random removals per text, their drops averaged")
    max_words: int = Field(200, ge=1, description="words weighed per text; a longer text is weighed in as many "
                           "spans of consecutive words")
    ig_steps: int = Field(32, ge=0, description="integrated gradients' points on the path from the all-padding "
                          "text (0: measure occlusion alone)")

    @model_validator(mode="after")
    def _ig_needs_steps(self) -> ExplainParams:
        if self.method == "integrated-gradients" and self.ig_steps < 2:
            raise ValueError("explain.method integrated-gradients needs explain.ig_steps of at least 2")
        if self.ig_steps == 1:
            raise ValueError("explain.ig_steps: 0 (skip integrated gradients) or at least 2 points on the path")
        return self


class ExportParams(_Section):
    """The export folder's ONNX models and their checks."""

    onnx: bool = Field(True, description="also write model.onnx, checked against PyTorch")
    int8: bool = Field(True, description="also write model.int8.onnx (dynamic int8 quantisation), scored beside "
                       "fp32")
    parity_texts: int = Field(64, ge=1, description="test texts of the ONNX parity check")
    parity_tolerance: float = Field(1e-4, gt=0, description="the largest allowed difference between ONNX and "
                                    "PyTorch logits; above it the stage fails")

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> ExportParams:
        if self.int8 and not self.onnx:
            raise ValueError("export.int8 quantises the ONNX model: set export.onnx to true, or export.int8 to false")
        return self


class Params(_Section):
    seed: int = Field(42, ge=0, description="the data: sampling and splits (and the baselines' regressions); "
                      "train.seed trains")
    paths: Paths = Field(default_factory=Paths)
    data: DataParams = Field(default_factory=DataParams)
    split: SplitParams = Field(default_factory=SplitParams)
    model: ModelParams = Field(default_factory=ModelParams)
    tokenize: TokenizeParams = Field(default_factory=TokenizeParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    explain: ExplainParams = Field(default_factory=ExplainParams)
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
