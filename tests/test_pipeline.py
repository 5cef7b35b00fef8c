"""The real pipeline under real `dvc` in a temporary copy of the repository: one small run (tiny model, 300 reviews)
shared by every test here. Runs that need a repository of their own are in test_pipeline_runs.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import datasets
import pandas as pd
import pytest
import yaml

from finetune.core.contract import probability_column
from finetune.core.files import read_table
from finetune.core.params import stage_keys
from tests.conftest import (
    ROOT,
    make_repo,
    offline_env,
    run,
    set_params,
    small_params,
    stages_run,
)

pytestmark = pytest.mark.pipeline
ALL_STAGES = {"check-params", "download", "split", "tokenize", "train", "evaluate", "error-analysis", "baseline",
              "label-issues", "export", "report"}


def lock_outs(repo: Path) -> dict[str, str]:
    """md5 of every stage output, from dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def restore(repo: Path) -> None:
    """Back to the last commit: tracked files from git (HEAD, since DVC stages dvc.lock), outputs from DVC's cache.

    The index is emptied first so that git rewrites every file: git trusts file stats, and an edit of the same
    size within the same second as the last checkout (batch_size 64 -> 16) would look unchanged and stay.
    """
    run("git rm -rq --cached . && git checkout -q HEAD -- . && git clean -fdq && dvc checkout -q", repo)


def small_run(folder: Path, model: Path, **extra) -> Path:
    """A repo that has run the whole pipeline once on 300 Rotten Tomatoes reviews, committed (``extra``: params
    other than small_params')."""
    repo = make_repo(folder, small_params(model, **extra))
    result = run(["dvc", "repro"], repo)
    assert set(stages_run(result.stdout)) == ALL_STAGES
    log = result.stdout + result.stderr  # one readable line per summary and per epoch, no bar per saved split
    assert "Saving the dataset" not in log and "{'" not in log and "LOAD REPORT" not in log
    assert "finetune.progress: epoch 2/2: validation loss" in log and "split sizes: train 216, validation 24" in log
    run("git add -A && git commit -q -m run", repo)
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model) -> Path:
    return small_run(tmp_path_factory.mktemp("pipeline") / "repo", tiny_model)


def test_full_run_writes_every_output(repo):
    metrics = json.loads((repo / "reports/evaluation.json").read_text())
    assert {"accuracy", "f1_macro", "precision", "recall", "f1", "per_class", "confusion_matrix"} <= set(metrics)
    headline = json.loads((repo / "reports/metrics.json").read_text())
    assert headline["accuracy"] == metrics["accuracy"] and headline["ece"] == metrics["calibration"]["ece_after"]
    assert metrics["n_test"] == 60 and metrics["confusion_matrix"]["labels"] == ["negative", "positive"]
    assert metrics["calibration"]["temperature"] > 0 and 0 <= metrics["calibration"]["ece_after"] <= 1
    figures = {p.name for p in (repo / "reports/figures").iterdir()}
    assert {"confusion.png", "roc.png", "reliability.png", "confidence.png", "risk_coverage.png"} <= figures
    assert (repo / "reports/training/learning_curves.png").stat().st_size > 0
    baselines = json.loads((repo / "reports/baselines.json").read_text())
    assert set(baselines) == {"tfidf_logreg", "frozen_encoder_logreg"}
    report = (repo / "reports/report.md").read_text()
    assert "tfidf logreg" in report and "UNCERTAIN" in report and "read as" in report
    assert "data:image/png;base64" in (repo / "reports/report.html").read_text()
    errors = pd.read_csv(repo / "reports/errors.csv")
    assert errors.columns.tolist() == ["row", "label", "predicted", "confidence", "slices", "drivers", "text"]
    assert (errors["label"] != errors["predicted"]).all() and errors["confidence"].is_monotonic_decreasing
    drivers = errors["drivers"].fillna("")  # the words behind the 20 most confident mistakes (explain.mistakes)
    assert drivers.head(20).str.match(r"^(negative|positive): ").all() and (drivers.iloc[20:] == "").all()
    assert all(cell.startswith(f"{answer}: ") for cell, answer in zip(drivers.head(20), errors["predicted"].head(20),
                                                                   strict=True))
    explanations = json.loads((repo / "reports/explanations.json").read_text())
    assert explanations["mistakes_explained_by"] == "occlusion"
    for method in ("occlusion", "integrated-gradients"):  # both measured on every test text
        figure = explanations[method]
        assert figure["texts"] == 60 and figure["top_share"] == 0.2 and figure["method"] == method
        assert figure["ratio"] is None or figure["ratio"] == pytest.approx(
            figure["mean_drop_top"] / figure["mean_drop_random"], rel=1e-3)
    assert "Words that drove the answer" in report
    assert json.loads((repo / "reports/error_summary.json").read_text())["n_errors"] == len(errors)
    issues = read_table(repo / "reports/label_issues.csv")  # likely mislabeled train texts, worst first
    train = datasets.load_from_disk(str(repo / "data/splits"))["train"]
    assert 0 < len(issues) < len(train) and issues["quality"].is_monotonic_increasing
    assert all(train[int(r.row)]["text"] == r.text for r in issues.itertuples())
    assert f"cleanlab flagged {len(issues)} of {len(train)} train texts" in report
    history = json.loads((repo / "reports/training/metrics.json").read_text())
    assert history["step"] == 2 and "eval" in history and "train" in history and history["epochs_run"] == 2
    export = repo / "models/export"
    config = json.loads((export / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["uncertain_threshold"] == 0.8
    assert {"model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in export.iterdir()}
    assert "accuracy" in (export / "README.md").read_text()
    assert {"model.onnx", "model.int8.onnx"} <= {p.name for p in export.iterdir()}
    onnx = json.loads((repo / "reports/export.json").read_text())
    assert onnx["parity_max_abs_error_micro"] < 100 and onnx["parity_texts"] == 60 and onnx["test_texts"] == 60
    assert onnx["int8_accuracy_delta"] == pytest.approx(onnx["int8_accuracy"] - onnx["fp32_accuracy"])
    assert not list((repo / ".checkpoints").iterdir())  # removed after success


def test_every_stage_is_listed_and_metrics_show(repo, artifacts):
    result = run(["dvc", "metrics", "show", "--json"], repo)
    shown = json.loads(result.stdout)
    files = shown[""]["data"] if "" in shown else next(iter(shown.values()))["data"]
    assert set(files) == {"reports/metrics.json", "reports/training/metrics.json", "reports/baselines.json",
                          "reports/export.json", "reports/significance.json", "reports/explanations.json"}
    assert {"accuracy", "f1_macro", "ece", "answered"} <= set(files["reports/metrics.json"]["data"])
    assert "tfidf_logreg" in files["reports/baselines.json"]["data"]
    against = files["reports/significance.json"]["data"]["tfidf_logreg"]  # the paired bootstrap, per baseline
    assert set(against) == {"accuracy", "f1_macro"}
    assert all(s["ci_low"] <= s["ci_high"] and 0 <= s["p_value"] <= 1 for s in against.values())
    # Headline figures only, a table a terminal can show; detail stays in tracked JSON that is not a metric
    table = run(["dvc", "metrics", "show"], repo).stdout.splitlines()
    width = max(len(line) for line in table)
    artifacts.append(f"`dvc metrics show` (small pipeline): {len(table[0].split())} columns, {width} characters a line")
    # with 16 of the paired bootstrap (2 baselines x 2 scores x 4), training's size (parameters trained and in all)
    # and 13 of the explanations' faithfulness (per method: drops, ratio, method, texts, share, draws)
    assert len(table[0].split()) <= 71
    shown = json.dumps(shown)
    assert "per_class" not in shown and "confusion" not in shown and "slices" not in shown
    shown = run(["dvc", "plots", "show", "--json"], repo).stdout
    plots = json.loads(shown)
    assert not plots.get("errors"), plots.get("errors")
    for name in ["Confusion matrix", "reports/plots/roc/positive.csv", "reports/plots/precision_recall/positive.csv",
                 "Reliability (before and after temperature scaling)", "Confidence histogram", "Risk-coverage",
                 "reports/training/learning_curves.png", "reports/figures/reliability.png"]:
        assert name in plots["data"], name
    assert "<DVC_METRIC" not in shown  # every anchor of the custom confusion template was filled


def test_second_repro_skips_everything(repo):
    result = run(["dvc", "repro"], repo)
    assert stages_run(result.stdout) == []
    assert "up to date" in run(["dvc", "status"], repo).stdout


def test_a_params_edit_shows_in_dvc_status_and_a_stage_run_alone_reads_it(repo):
    """The keys each stage lists in dvc.yaml are DVC params dependencies: `dvc status` names the stages an edit
    concerns, and `dvc repro -s STAGE` runs that stage with the value on disk (never skips it, never runs it with
    an older one)."""
    set_params(repo, {"evaluate.uncertain_threshold": 0.6})
    # check-params reads every key; the report reads evaluate's settings too (are the seeds measured with them?)
    assert set(json.loads(run(["dvc", "status", "--json"], repo).stdout)) == {"check-params", "evaluate", "export",
                                                                            "report"}
    assert stages_run(run(["dvc", "repro", "-s", "evaluate"], repo).stdout) == ["evaluate"]
    assert json.loads((repo / "reports/evaluation.json").read_text())["uncertain"]["threshold"] == 0.6
    # error-analysis reads the calibration temperature in evaluation.json, whose bytes the threshold changed
    assert set(json.loads(run(["dvc", "status", "--json"], repo).stdout)) == {"check-params", "error-analysis",
                                                                              "export", "report"}
    assert set(stages_run(run(["dvc", "repro"], repo).stdout)) == {"check-params", "error-analysis", "export",
                                                                   "report"}
    assert json.loads((repo / "models/export/config.json").read_text())["uncertain_threshold"] == 0.6
    restore(repo)


def test_a_tuned_decision_threshold_reruns_no_training_and_travels_with_the_export(repo):
    """evaluate.decision_threshold tuned: split checks the labels (and writes the same bytes), evaluate tunes the
    threshold on validation, the baselines take the same rule, and predict applies the exported one on both
    backends."""
    set_params(repo, {"evaluate.decision_threshold": "tuned"})
    try:
        ran = set(stages_run(run(["dvc", "repro"], repo).stdout))
        rerun = {"check-params", "split", "evaluate", "baseline", "export", "report"}
        assert rerun <= ran <= rerun | {"error-analysis"}, ran  # error-analysis: if the answers moved
        decision = json.loads((repo / "reports/evaluation.json").read_text())["decision"]
        cut, positive = decision["threshold"], decision["positive_label"]
        assert json.loads((repo / "models/export/config.json").read_text())["finetune_decision_threshold"] == cut
        predictions = pd.read_csv(repo / "reports/predictions.csv", dtype={"label": str, "predicted": str})
        assert ((predictions["predicted"] == positive) == (predictions[probability_column(positive)] >= cut)).all()
        assert all("decision_threshold" in row for row in json.loads((repo / "reports/baselines.json").read_text())
                   .values())
        assert "evaluate.decision_threshold tuned" in (repo / "reports/report.md").read_text()
        texts = predictions_texts(repo)
        for backend in ("torch", "onnx"):
            answers = [json.loads(line) for line in run(["python", "-m", "finetune", "predict", "--model",
                                                         "models/export", "--backend", backend, "--json", *texts],
                                                        repo).stdout.splitlines()]
            assert [a["predicted"] == positive for a in answers] == [a["probabilities"][positive] >= cut
                                                                     for a in answers], backend
        from transformers import pipeline  # the README's line gives the same answers

        classify = pipeline("text-classification", model=str(repo / "models/export"), top_k=None)
        config, names = classify.model.config, [classify.model.config.id2label[i] for i in (0, 1)]
        for text, answer in zip(texts, answers, strict=True):
            scores = {s["label"]: s["score"] for s in classify(text)[0]}
            assert (names[1] if scores[names[1]] >= config.finetune_decision_threshold else names[0]) == \
                answer["predicted"]
    finally:
        restore(repo)
    assert stages_run(run(["dvc", "repro"], repo).stdout) == []


def predictions_texts(repo: Path, n: int = 8) -> list[str]:
    return datasets.load_from_disk(str(repo / "data/splits"))["test"]["text"][:n]


def test_code_edits_rerun_the_stages_that_list_the_code_and_nothing_after(repo):
    """contract.py holds the truncation rule, the softmax and the UNCERTAIN rule, tokenization.py the tokenizing:
    every stage that runs either must rerun when it changes; what follows them reruns only if their outputs' bytes
    move, and neither a comment nor a refactor moves any (the tokenized splits carry a fingerprint of their content,
    so the same tokens give the same bytes)."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    listing = {name for name, stage in stages.items()
               if {"finetune/core/contract.py", "finetune/data/tokenization.py"} & set(stage["deps"])}
    assert {"check-params", "tokenize", "evaluate", "export", "error-analysis"} <= listing
    for module, note in ((repo / "finetune" / "core" / "contract.py", "# a comment"),
                         (repo / "finetune" / "data" / "tokenization.py", "# a refactor: its tokens do not change")):
        module.write_text(module.read_text() + f"\n{note}\n")
    before = lock_outs(repo)
    try:
        assert set(json.loads(run(["dvc", "status", "--json"], repo).stdout)) == listing
        assert set(stages_run(run(["dvc", "repro"], repo).stdout)) == listing
        assert lock_outs(repo) == before
    finally:  # the tests after this one share the repository
        restore(repo)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# Each mistake, and what the one line printed must say. Nothing may be deleted before it is reported.
BAD_PARAMS = {
    "typo": ({"evaluate.uncertain_treshold": 0.5},
             "error: params.yaml is invalid: evaluate.uncertain_treshold: unknown key (did you mean "
             "evaluate.uncertain_threshold?)"),
    "section": ({"evalute": {"batch_size": 8}}, "evalute: unknown key (did you mean evaluate?)"),
    "value": ({"train.epochs": 0}, "train.epochs: Input should be greater than or equal to 1 (got 0)"),
    "source": ({"data.source": "data/mine.csv"}, "error: data.source: 'data/mine.csv' is no file or folder"),
    "model": ({"model.name": "someone/no-such-model"},
              "error: model.name: 'someone/no-such-model' is a Hugging Face hub model id, but the hub cannot be used"),
    "architecture": ({"model.name": "vit"},
                     "error: model.name: vit is a 'vit' model, which transformers has no text classifier for"),
    "lora target": ({"train.adapter": "lora", "train.lora.target_modules": ["q_proj", "v_proj"]},
                    "error: train.lora.target_modules: BertForSequenceClassification has no layer named 'q_proj', "
                    "'v_proj': name layers it has (its linear layers: dense, key, query, value), or use auto or "
                    "all-linear"),
    "window stride": ({"tokenize.truncation": "windows", "tokenize.stride": 30},
                      "error: tokenize.stride: 30 is not below the 30 tokens of text a 32-token window holds (less 2 "
                      "special tokens), so windows could not move on: set tokenize.stride below 30, e.g. 7"),
    # the header is read before DVC deletes data/raw and reports/data.json
    "column": ({"data.source": "reviews.csv", "data.label_column": "sentiment"},
               "error: reviews.csv has no column 'sentiment' (it has 'text', 'label')"),
    "missing key": ({"train.compile": None}, "params.yaml lacks keys that stages read, and DVC tracks only what the "
                    "file holds: add them with their defaults, which keep the behaviour of a file without them: "
                    "train.compile: false (read by export, report, train)"),
}


@pytest.mark.parametrize("case", BAD_PARAMS)
def test_a_params_mistake_fails_first_in_one_line_and_deletes_nothing(repo, case, artifacts):
    updates, message = BAD_PARAMS[case]
    reports, raw, model = files_under(repo / "reports"), files_under(repo / "data/raw"), files_under(repo / "models")
    if case == "section":
        with (repo / "params.yaml").open("a") as handle:
            handle.write(yaml.safe_dump(updates))
    elif case == "architecture":  # an image model: transformers has no text classifier for it
        import transformers

        vit = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        transformers.ViTModel(vit).save_pretrained(repo / "vit", safe_serialization=True)
        set_params(repo, updates)
    elif case == "missing key":
        params = yaml.safe_load((repo / "params.yaml").read_text())
        del params["train"]["compile"]
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    else:
        (repo / "reviews.csv").write_text("text,label\nA fine film.,positive\n")
        set_params(repo, updates)
    result = run(["dvc", "repro"], repo, check=False)
    assert result.returncode != 0 and stages_run(result.stdout) == ["check-params"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    artifacts.append(f"params mistake ({case}): {errors[0]}")
    assert "Traceback" not in result.stderr
    assert files_under(repo / "reports") == reports and files_under(repo / "data/raw") == raw
    assert files_under(repo / "models") == model
    assert "check-params" in json.loads(run(["dvc", "status", "--json"], repo).stdout)
    restore(repo)
    assert "up to date" in run(["dvc", "status"], repo).stdout


def stages_listing(key: str) -> set[str]:
    """The stages that read ``key`` (dvc.yaml lists it, or a section holding it)."""
    return {name for name, keys in stage_keys(ROOT / "dvc.yaml").items()
            if any(key == k or key.startswith(k + ".") for k in keys)}


def lock_deps(repo: Path) -> dict[str, dict[str, str]]:
    """Per stage, the md5 of each file or folder it depends on, from dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name: {dep["path"]: dep["md5"] for dep in stage.get("deps", [])} for name, stage in lock.items()}


# Keys whose stages differ, each with a valid new value; `dvc repro` really runs. tests/test_params.py checks for
# every key which stages' params files change; these check that DVC then reruns exactly what those files and their
# outputs' bytes say: new tokens (truncation) rerun what follows, equal bytes (evaluate.batch_size) stop the rerun,
# a moved output (paths.errors), an export setting. Training params: the learning-rate and run-cache tests below.
RERUN_CASES = {"tokenize.truncation": {"tokenize.truncation": "tail"},
               # two sections at once, one repro: stages listing either rerun
               "evaluate.batch_size and paths.errors": {"evaluate.batch_size": 16, "paths.errors": "reports/wrong.csv"},
               "export.int8": {"export.int8": False}}


@pytest.mark.parametrize("case", RERUN_CASES)
def test_each_params_section_reruns_exactly_its_stages_and_what_their_outputs_feed(repo, case):
    """`dvc repro` after keys change runs the stages listed for them, and downstream only where a dep changed."""
    listed = set().union(*map(stages_listing, RERUN_CASES[case]))
    deps_before = lock_deps(repo)
    set_params(repo, RERUN_CASES[case])
    try:
        check_reruns(repo, case, listed, deps_before)
    finally:
        restore(repo)
    assert "up to date" in run(["dvc", "status"], repo).stdout


def check_reruns(repo: Path, key: str, listed: set[str], deps_before: dict[str, dict[str, str]]) -> None:
    # DVC sees the stages that list the key changed at once; later ones only once an input's bytes change
    assert set(json.loads(run(["dvc", "status", "--json"], repo).stdout)) == {"check-params"} | listed
    output = run(["dvc", "repro"], repo).stdout
    # An earlier test may have run the same params: DVC then restores the stage from its run-cache.
    ran = set(stages_run(output)) | {line.split("'")[1] for line in output.splitlines()
                                     if "is cached - skipping run" in line}
    deps_after = lock_deps(repo)
    assert listed | {"check-params"} <= ran, key
    for stage in ran - listed - {"check-params"}:  # ran though it reads none of the keys: an input of it changed
        assert deps_after[stage] != deps_before[stage], (key, stage)
    assert "up to date" in run(["dvc", "status"], repo).stdout


def test_a_training_param_reruns_train_on_shows_in_the_diffs_and_comes_back_from_the_run_cache(repo):
    """One training run for three promises: a learning-rate edit reruns nothing before train; committed, `dvc
    metrics diff` and `dvc plots diff` show what it changed; back to the earlier params, DVC restores the earlier
    model from its run-cache without training."""
    set_params(repo, {"train.learning_rate": 5e-4})
    ran = stages_run(run(["dvc", "repro"], repo).stdout)
    assert ran[:2] == ["check-params", "train"]
    assert set(ran) <= {"check-params", "train", "evaluate", "error-analysis", "export", "report"}
    run("git add -A && git commit -q -m 'learning rate 5e-4'", repo)
    try:
        diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--json"], repo).stdout)
        assert diff["reports/training/metrics.json"]["best_eval_loss"]["diff"] != 0
        plots = json.loads(run(["dvc", "plots", "diff", "HEAD~1", "--json"], repo).stdout)
        curve = next(v for k, v in plots["data"].items() if k.endswith("eval/loss.tsv"))
        assert {rev for entry in curve for rev in entry.get("revisions", [])} == {"HEAD~1", "workspace"}
        # Written from git, not `git checkout`: git trusts file stats and may skip a same-size edit.
        (repo / "params.yaml").write_text(run(["git", "show", "HEAD~1:params.yaml"], repo).stdout)
        result = run(["dvc", "repro"], repo)
        assert "Stage 'train' is cached - skipping run" in result.stdout and "train" not in stages_run(result.stdout)
        lock = yaml.safe_load(run(["git", "show", "HEAD~1:dvc.lock"], repo).stdout)
        assert lock_outs(repo)["models/model"] == next(o["md5"] for o in lock["stages"]["train"]["outs"]
                                                       if o["path"] == "models/model")
    finally:
        run("git reset -q --hard HEAD~1", repo)
        restore(repo)
    assert "up to date" in run(["dvc", "status"], repo).stdout


def test_nan_loss_fails_train_and_keeps_the_previous_model(repo, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    broken = shutil.copytree(yaml.safe_load((repo / "params.yaml").read_text())["model"]["name"], tmp_path / "nan")
    weights = load_file(broken / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()},
              broken / "model.safetensors")
    lock_before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    export_before = (repo / "models/export/model.safetensors").read_bytes()
    set_params(repo, {"model.name": str(broken)})
    result = run(["dvc", "repro"], repo, check=False)
    assert result.returncode != 0 and "error: the training loss became nan" in result.stderr
    assert "Traceback" not in result.stderr
    lock_after = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in ["train", "evaluate", "export", "report"]:
        assert lock_after[stage] == lock_before[stage], stage
    assert (repo / "models/export/model.safetensors").read_bytes() == export_before
    restore(repo)


def test_two_repros_at_once_one_refuses_with_a_lock_message(repo):
    import subprocess
    import time


    first = subprocess.Popen(["dvc", "repro", "-f", "-s", "train"], cwd=repo, env=offline_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((repo / ".checkpoints").glob("*/checkpoint-*")) and time.monotonic() < deadline:
            time.sleep(0.2)  # wait until the first run is inside the train stage
        second = run(["dvc", "repro"], repo, check=False)
    finally:
        output, _ = first.communicate(timeout=300)
    # DVC refuses at once: the repo lock, or the read-write lock of the outputs the first run holds
    assert second.returncode != 0
    assert "Unable to acquire lock" in second.stderr or "is busy, it is being blocked by" in second.stderr
    assert first.returncode == 0, output
    assert "up to date" in run(["dvc", "status"], repo).stdout
    assert stages_run(run(["dvc", "repro"], repo).stdout) == []


def test_disk_full_while_saving_the_model_keeps_the_previous_one(repo):
    models = repo / "models"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(models)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    lock_before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train"]
    try:
        result = run(["dvc", "repro", "-f", "-s", "train"], repo, check=False)
    finally:
        subprocess.run(["umount", str(models)], check=True)
    assert result.returncode != 0
    assert "error: no space left on the device holding models/model" in result.stderr
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train"] == lock_before
    shutil.rmtree(models / "model")  # had the disk been shared, the failed run would have lost it
    run(["dvc", "checkout", "models/model"], repo)
    run("git checkout -q HEAD -- reports", repo)  # the stage's git-tracked metrics and plots
    assert "up to date" in run(["dvc", "status"], repo).stdout
    restore(repo)


def test_every_stage_is_byte_identical_when_forced(repo):
    """Same params and seed: every output of every stage, the trained model included, hashes the same."""
    before = lock_outs(repo)
    ran = stages_run(run(["dvc", "repro", "-f", "--no-run-cache"], repo).stdout)
    assert set(ran) == ALL_STAGES
    after = lock_outs(repo)
    assert after == before, {path for path in before if after.get(path) != before[path]}
    assert "up to date" in run(["dvc", "status"], repo).stdout


def threshold_of(export: Path) -> float:
    return json.loads((export / "config.json").read_text())["uncertain_threshold"]


def test_published_versions_are_fetched_by_stage_or_version_and_by_a_clone(repo, tmp_path, artifacts):
    """docs/models.md's publishing sequence (dvc push, its commit of dvc.lock, params.yaml and the reports, clone,
    dvc pull, predict) and DVC's model registry: two GTO versions, `prod` on the first, fetched without cloning or
    running anything. A clone of what the docs commit is up to date once pulled."""
    publish = next(line for line in (ROOT / "docs/models.md").read_text().splitlines() if line.startswith("git add"))
    publish = publish.split(" && git push")[0]  # no git remote here
    publisher = Path(shutil.copytree(repo, tmp_path / "publisher", symlinks=True))
    remote = tmp_path / "remote"
    # An absolute URL: `dvc artifacts get` reads the remote from a temporary clone, where a relative one breaks.
    run(["dvc", "remote", "add", "-f", "-d", "shared", str(remote)], publisher)
    run("git add .dvc/config", publisher)  # committed with the model below
    run(["dvc", "push"], publisher)
    run(publish.replace('"model: ..."', "'model v1'"), publisher)
    run(["gto", "register", "text-classifier", "--version", "v1.0.0"], publisher)
    run(["gto", "assign", "text-classifier", "--version", "v1.0.0", "--stage", "prod"], publisher)
    set_params(publisher, {"evaluate.uncertain_threshold": 0.6})
    run(["dvc", "repro"], publisher)
    run(["dvc", "push"], publisher)
    run(publish.replace('"model: ..."', "'model v1.1: threshold 0.6'"), publisher)
    assert run("git status --porcelain", publisher).stdout == ""  # the docs' commit takes everything it changed
    run(["gto", "register", "text-classifier", "--version", "v1.1.0"], publisher)
    registry = json.loads(run(["gto", "show", "--json"], publisher).stdout)
    artifacts.append(f"gto show: {json.dumps(registry)}")
    assert "text-classifier" in json.dumps(registry)

    consumer = tmp_path / "consumer"
    consumer.mkdir()
    fetched = run(["dvc", "artifacts", "get", str(publisher), "text-classifier", "--stage", "prod", "-o", "prod"],
                  consumer)
    artifacts.append(f"dvc artifacts get --stage prod: {(fetched.stdout + fetched.stderr).strip()}")
    run(["dvc", "artifacts", "get", str(publisher), "text-classifier", "--rev", "v1.1.0", "-o", "latest"], consumer)
    assert threshold_of(consumer / "prod") == 0.8 and threshold_of(consumer / "latest") == 0.6
    answer = json.loads(run(["python", "-m", "finetune", "predict", "--model", str(consumer / "prod"), "--json",
                             "A moving film."], ROOT).stdout)
    assert answer["predicted"] in {"negative", "positive"}

    clone = tmp_path / "clone"  # a colleague: clone, pull only the export, predict; no --local remote needed
    run(["git", "clone", "-q", str(publisher), str(clone)], tmp_path)
    run(["dvc", "pull", "export"], clone)
    assert (clone / "models/export/model.safetensors").is_file() and not (clone / "models/model").exists()
    assert threshold_of(clone / "models/export") == 0.6
    torch = run(["python", "-m", "finetune", "predict", "--backend", "torch", "--threshold", "0", "A moving film."],
                clone).stdout
    default = run(["python", "-m", "finetune", "predict", "--threshold", "0", "A moving film."], clone).stdout
    assert torch.split("\t")[0] == default.split("\t")[0] in {"negative", "positive"}  # ONNX Runtime agrees
    run(["dvc", "pull"], clone)
    assert "up to date" in run(["dvc", "status"], clone).stdout  # params.yaml and dvc.lock tell the same story


def test_verify_cache_finds_corruption_dvc_misses_and_restores_it(repo, tmp_path):
    """With the cache moved out of .dvc/cache (`dvc cache dir`), verify-cache rehashes the cache DVC uses."""
    remote, moved = tmp_path / "remote", tmp_path / "moved-cache"
    shutil.move(repo / ".dvc" / "cache", moved)
    run(["dvc", "cache", "dir", "--local", str(moved)], repo)
    run(["dvc", "remote", "add", "-f", "-d", "--local", "test", str(remote)], repo)
    try:
        run(["dvc", "push"], repo)
        lock = yaml.safe_load((repo / "dvc.lock").read_text())
        model_dir = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model")
        listing = moved / "files/md5" / model_dir[:2] / model_dir[2:]
        entry = next(e for e in json.loads(listing.read_text()) if e["relpath"] == "model.safetensors")
        victim = moved / "files/md5" / entry["md5"][:2] / entry["md5"][2:]
        good, stat = victim.read_bytes(), victim.stat()
        victim.chmod(0o644)
        victim.write_bytes(good[:-10] + b"corrupted!")  # bit rot: same size, same file time, still read-only
        victim.chmod(stat.st_mode)  # DVC trusts a read-only cache file without rehashing it
        os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert "up to date" in run(["dvc", "status"], repo).stdout  # DVC does not notice
        out = run(["python", "-m", "finetune", "verify-cache"], repo).stdout
        assert "1 corrupted cache objects removed and restored from the remote" in out
        assert victim.read_bytes() == good
        assert "every object matches" in run(["python", "-m", "finetune", "verify-cache"], repo).stdout
    finally:
        run(["dvc", "remote", "remove", "--local", "test"], repo)
        run(["dvc", "cache", "dir", "--local", "--unset"], repo)
        shutil.move(moved, repo / ".dvc" / "cache")
